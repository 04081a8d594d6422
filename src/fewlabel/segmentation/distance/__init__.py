"""In silico labelling pretraining (paper 002) and mask + distance fine-tuning."""
