"""Tables (markdown) and box plots of the PU picking benchmark from results/*.jsonl.

Usage::

    .venv/bin/python benchmarks/pu_picking/tables.py
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import pandas as pd
from crowding_tables import crowding_section, f1_spread

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ORDER = ["PU+SWA", "PU", "PU+EMA", "PN"]


def _read(name: str) -> pd.DataFrame:
    path = RESULTS / name
    if not path.exists():
        return pd.DataFrame()
    return pd.DataFrame([json.loads(line) for line in path.read_text().splitlines() if line])


def centriole_tables(df: pd.DataFrame) -> str:
    rows = []
    for (config, n), g in df.groupby(["config", "n"]):
        rows.append(
            {
                "config": config,
                "N clicks": n,
                "runs": len(g),
                **f1_spread(g["f1_full"]),
                "F1 (NMS only)": g["f1_nms"].median(),
                "train s": g["train_s"].median(),
            }
        )
    table = pd.DataFrame(rows)
    table["_o"] = table["config"].map({c: i for i, c in enumerate(ORDER)})
    table = table.sort_values(["N clicks", "_o"]).drop(columns="_o")
    ablation = (
        df.groupby("config")[["fp_nms", "fp_full", "fn_nms", "fn_full", "tp_nms", "tp_full"]]
        .mean()
        .round(1)
        .reset_index()
    )
    return (
        "### Earlier run (before the threshold fix): F1 vs clicked particles (80 centrioles)\n\n"
        + table.to_markdown(index=False, floatfmt=".3f")
        + "\n\n### Post-processing ablation, earlier run (old threshold rule; mean per run over all"
        + " N; 80 particles)\n\n"
        + ablation.to_markdown(index=False)
        + "\n"
    )


def centriole_plots(df: pd.DataFrame) -> None:
    ns = sorted(df["n"].unique())
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, configs, title in (
        (axes[0], ["PU+SWA", "PN"], "PU (GE-binomial) vs PN (cf. paper Fig. 4)"),
        (axes[1], ["PU+SWA", "PU", "PU+EMA"], "SWA vs none vs EMA (cf. paper Fig. 5)"),
    ):
        width = 0.8 / len(configs)
        for i, config in enumerate(configs):
            data = [df[(df.config == config) & (df.n == n)]["f1_full"].to_numpy() for n in ns]
            pos = [j + (i - (len(configs) - 1) / 2) * width for j in range(len(ns))]
            keep = [k for k, d in enumerate(data) if len(d)]
            bp = ax.boxplot(
                [data[k] for k in keep],
                positions=[pos[k] for k in keep],
                widths=width * 0.9,
                patch_artist=True,
            )
            for patch in bp["boxes"]:
                patch.set_facecolor(f"C{ORDER.index(config)}")
            ax.plot([], [], "s", color=f"C{ORDER.index(config)}", label=config)
        ax.set_xticks(range(len(ns)), [str(n) for n in ns])
        ax.set_xlabel("annotated particles N")
        ax.set_ylabel("F1")
        ax.set_ylim(0, 1)
        ax.axhline(0.85, color="grey", ls=":", lw=1)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(RESULTS / "centrioles_boxplots.png", dpi=90)
    plt.close(fig)


SPOT_LABELS = {
    "PU+SWA": "PU+SWA (old threshold rule, session pu)",
    "PU+SWA (fixed rule)": "PU+SWA (fixed threshold rule, session pu3)",
    "density (as today)": "density (as today, session pu)",
}


def spot_table(df: pd.DataFrame) -> str:
    df = df.assign(method=df["method"].map(lambda m: SPOT_LABELS.get(m, m)))
    table = df.pivot_table(index=["method", "n"], columns="snr", values="f1_full").round(3)
    table.columns = [f"F1 SNR {c:g}" for c in table.columns]
    text = table.reset_index().rename(columns={"n": "clicks"}).to_markdown(index=False)
    if not df["method"].str.contains("partial").any():
        text += "\n| density (partial-annotation mode) | 10, 50 | not run | |\n"
    return "### PU vs DM-DetNet3D at the same clicks (PTC-like spots)\n\n" + text + "\n"


def main() -> None:
    parts = []
    cent = _read("centrioles.jsonl")
    if len(cent):
        parts.append(centriole_tables(cent))
        centriole_plots(cent)
    crowd = crowding_section(RESULTS)
    if crowd:
        parts.append(crowd)
    spots = _read("spots.jsonl")
    if len(spots):
        parts.append(spot_table(spots))
    (RESULTS / "tables.md").write_text("\n".join(parts))
    print("\n".join(parts))


if __name__ == "__main__":
    main()
