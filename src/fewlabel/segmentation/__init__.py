"""Instance segmentation methods, one folder each, the loss library and the shared
h-maxima + watershed instance splitting."""
