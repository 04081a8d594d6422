"""Tables and box plots of crowding.py (results/crowding_*.jsonl), used by tables.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt

CONFIGS = ["PU+SWA", "PU", "PU+EMA", "PN", "PN-noSWA", "FS"]
SCENARIOS = ["base", "dense", "clustered", "clustered_big"]
STAGES = ["nms", "+average", "+recentre", "+intensity", "+roi (full)"]
THRESHOLDS = ["auto", "auto_nms", "k/2", "1.5k", "0.5"]


def read(results: Path, pattern: str = "crowding_*.jsonl") -> pd.DataFrame:
    rows = []
    for path in sorted(results.glob(pattern)):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line]
    df = pd.DataFrame(rows)
    if not df.empty:
        df["radius_um"] = df.get("radius_um", pd.Series(0.15, index=df.index)).fillna(0.15)
        # a run is deterministic (same seed, same row); keep one row per run if two files hold it
        key = ["scenario", "config", "n", "run", "k_factor", "radius_um"]
        df = df.drop_duplicates(subset=key).reset_index(drop=True)
    return df


def _cell(x: pd.Series) -> str:
    if len(x) < 2:
        return f"{x.median():.3f}"
    return f"{x.median():.3f} ({x.mean():.3f} ± {x.std(ddof=1):.3f})"


def f1_spread(f1: pd.Series) -> dict[str, Any]:
    """Table cells: F1 median, mean ± sd (ddof 1) and range of a configuration's runs."""
    return {
        "F1 median": f1.median(),
        "F1 mean ± sd": f"{f1.mean():.3f} ± {f1.std(ddof=1):.3f}",
        "F1 min-max": f"{f1.min():.3f}-{f1.max():.3f}",
    }


def _order(df: pd.DataFrame, col: str, order: list[str]) -> pd.DataFrame:
    return df.assign(_o=df[col].map({c: i for i, c in enumerate(order)})).sort_values("_o")


def n10_table(df: pd.DataFrame) -> str:
    rows = []
    for (scen, config), g in df.groupby(["scenario", "config"]):
        rows.append(
            {
                "scenario": scen,
                "particles (train / test)": "{} / {}".format(
                    g["particles"].iloc[0]["train"][0], g["particles"].iloc[0]["test"][0]
                ),
                "pi_U": round(g["pi_u"].median(), 4) if config.startswith("PU") else "",
                "config": config,
                "runs": len(g),
                **f1_spread(g["f1_auto_test"]),
                "precision": g["precision_auto_test"].median(),
                "recall": g["recall_auto_test"].median(),
            }
        )
    t = pd.DataFrame(rows)
    t["_s"] = t["scenario"].map({c: i for i, c in enumerate(SCENARIOS)})
    t["_c"] = t["config"].map({c: i for i, c in enumerate(CONFIGS)})
    t = t.sort_values(["_s", "_c"]).drop(columns=["_s", "_c"])
    return t.to_markdown(index=False, floatfmt=".3f")


def threshold_table(df: pd.DataFrame, split: str) -> str:
    rows = []
    for (scen, config), g in df.groupby(["scenario", "config"]):
        row = {"scenario": scen, "config": config, "runs": len(g)}
        for t in THRESHOLDS:
            row[t] = _cell(g[f"f1_{t}_{split}"])
        rows.append(row)
    t = pd.DataFrame(rows)
    t["_s"] = t["scenario"].map({c: i for i, c in enumerate(SCENARIOS)})
    t["_c"] = t["config"].map({c: i for i, c in enumerate(CONFIGS)})
    return t.sort_values(["_s", "_c"]).drop(columns=["_s", "_c"]).to_markdown(index=False)


def ngrid_table(df: pd.DataFrame) -> str:
    """F1 (auto, test) against N: clustered, and clustered_big (4x training volume) for the
    points that need more particles (N = 500) plus its reference points."""
    g = df[df["scenario"].isin(["clustered", "clustered_big"]) & (df["k_factor"] == 1.0)]
    rows = []
    for (scen, config, n), h in g.groupby(["scenario", "config", "n"]):
        f1 = h["f1_auto_test"]
        rows.append(
            {
                "training volume": "296 particles" if scen == "clustered" else "~1200 (4x)",
                "config": config,
                "N": n,
                "runs": len(h),
                "F1 median (mean ± sd)": _cell(f1),
                "F1 min-max": f"{f1.min():.3f}-{f1.max():.3f}",
                "precision": h["precision_auto_test"].median(),
                "recall": h["recall_auto_test"].median(),
            }
        )
    t = pd.DataFrame(rows)
    t["_c"] = t["config"].map({c: i for i, c in enumerate(CONFIGS)})
    t = t.sort_values(["training volume", "N", "_c"], ascending=[False, True, True])
    return t.drop(columns="_c").to_markdown(index=False, floatfmt=".3f")


def ngrid_pivot(df: pd.DataFrame) -> str:
    """Compact F1 median (runs) per config x N; N = 500 from the 4x training volume."""
    g = df[df["scenario"].isin(["clustered", "clustered_big"]) & (df["k_factor"] == 1.0)]
    g = g[(g["scenario"] == "clustered") | (g["n"] > 296)]
    cells = g.groupby(["config", "n"])["f1_auto_test"].agg(["median", "size"])
    table = pd.DataFrame(
        {
            (f"N = {n}" + (" (4x volume)" if n > 296 else "")): {
                c: f"{cells.loc[(c, n), 'median']:.3f} ({cells.loc[(c, n), 'size']})"
                for c in CONFIGS
                if (c, n) in cells.index
            }
            for n in sorted(g["n"].unique())
        }
    ).reindex([c for c in CONFIGS if c in set(g["config"])])
    return table.fillna("–").rename_axis("config").reset_index().to_markdown(index=False)


def ablation_table(df: pd.DataFrame) -> str:
    """Experiment 2: FP / FN after each post-processing step (auto threshold, test volume),
    mean per run; 'runs with new FN' counts runs whose full chain misses a particle that the
    NMS-only output found."""
    if "ablation_auto_test" not in df:
        return ""
    g = df[df["ablation_auto_test"].notna()]
    rows = []
    for (scen, config), h in g.groupby(["scenario", "config"]):
        per = [{a["stage"]: a for a in abl} for abl in h["ablation_auto_test"]]
        row = {
            "scenario": scen,
            "config": config,
            "N": ", ".join(str(n) for n in sorted(h["n"].unique())),
            "runs": len(h),
            "particles": h["particles"].iloc[0]["test"][0],
        }
        for what in ("fp", "fn"):
            means = [sum(p[st][what] for p in per) / len(per) for st in STAGES]
            row[f"{what.upper()}: " + " → ".join(STAGES)] = " → ".join(f"{m:.1f}" for m in means)
        row["runs with new FN"] = sum(p["+roi (full)"]["fn"] > p["nms"]["fn"] for p in per)
        rows.append(row)
    t = pd.DataFrame(rows)
    t["_s"] = t["scenario"].map({c: i for i, c in enumerate(SCENARIOS)})
    t["_c"] = t["config"].map({c: i for i, c in enumerate(CONFIGS)})
    t = t.sort_values(["_s", "_c"]).drop(columns=["_s", "_c"])
    return t.to_markdown(index=False, floatfmt=".1f")


def kmis_table(df: pd.DataFrame) -> str:
    g = df[(df["scenario"] == "base") & (df["config"].isin(["PU+SWA", "PN"]))]
    rows = []
    for (config, kf), h in g.groupby(["config", "k_factor"]):
        rows.append(
            {
                "config": config,
                "k given / true k": kf,
                "runs": len(h),
                "pi_U": round(h["pi_u"].median(), 4),
                "F1 auto (test)": _cell(h["f1_auto_test"]),
                "F1 at 0.5 (test)": _cell(h["f1_0.5_test"]),
            }
        )
    return pd.DataFrame(rows).sort_values(["config", "k given / true k"]).to_markdown(index=False)


def radius_table(df: pd.DataFrame) -> str:
    g = df[(df["scenario"] == "base") & (df["n"] == 10) & (df["k_factor"] == 1.0)]
    g = g[g["config"].isin(["PU+SWA", "PN"])]
    rows = []
    for (config, r), h in g.groupby(["config", "radius_um"]):
        rows.append(
            {
                "config": config,
                "r (µm)": r,
                "runs": len(h),
                "pi_U (PN: pi)": round(h["pi_u"].median(), 4),
                "F1 auto (test)": _cell(h["f1_auto_test"]),
                "F1 at 0.5 (test)": _cell(h["f1_0.5_test"]),
                "F1 auto (val)": _cell(h["f1_auto_val"]),
            }
        )
    return pd.DataFrame(rows).sort_values(["r (µm)", "config"]).to_markdown(index=False)


def _boxes(ax, groups: list[list[float]], labels: list[str], configs: list[str]) -> None:
    width = 0.8 / len(configs)
    for i, config in enumerate(configs):
        data = [groups[j][i] for j in range(len(labels))]
        pos = [j + (i - (len(configs) - 1) / 2) * width for j in range(len(labels))]
        keep = [k for k, d in enumerate(data) if len(d)]
        if not keep:
            continue
        bp = ax.boxplot(
            [data[k] for k in keep],
            positions=[pos[k] for k in keep],
            widths=width * 0.9,
            patch_artist=True,
        )
        for patch in bp["boxes"]:
            patch.set_facecolor(f"C{CONFIGS.index(config)}")
        ax.plot([], [], "s", color=f"C{CONFIGS.index(config)}", label=config)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylim(0, 1.02)
    ax.axhline(0.85, color="grey", ls=":", lw=1)
    ax.set_ylabel("F1 (test)")
    ax.legend(fontsize=7, loc="lower left")


def _boxplot_figure(
    path: Path,
    groups: list[list[list[float]]],
    labels: list[str],
    configs: list[str],
    *,
    title: str,
    ylim: tuple[float, float],
    figsize: tuple[float, float],
    xlabel: str | None = None,
) -> None:
    """One axes of :func:`_boxes` saved to ``path``."""
    fig, ax = plt.subplots(figsize=figsize)
    _boxes(ax, groups, labels, configs)
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.set_ylim(*ylim)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plots(df: pd.DataFrame, results: Path) -> None:
    n10 = df[(df["n"] == 10) & (df["k_factor"] == 1.0)]
    scenarios = [s for s in SCENARIOS if (n10.scenario == s).any()]
    fig, axes = plt.subplots(1, 1 + len(scenarios), figsize=(4.6 * (1 + len(scenarios)), 4))
    groups = [
        [n10[(n10.scenario == s) & (n10.config == c)]["f1_auto_test"].tolist() for c in CONFIGS]
        for s in scenarios
    ]
    _boxes(axes[0], groups, scenarios, CONFIGS)
    axes[0].set_title("N = 10, auto threshold: scenario (cf. Fig. 4/5)", fontsize=9)
    for ax, scen in zip(axes[1:], scenarios, strict=True):
        g = n10[n10.scenario == scen]
        groups = [[g[g.config == c][f"f1_{t}_test"].tolist() for c in CONFIGS] for t in THRESHOLDS]
        _boxes(ax, groups, THRESHOLDS, CONFIGS)
        ax.set_title(f"N = 10, {scen}: threshold rule", fontsize=9)
    fig.tight_layout()
    fig.savefig(results / "crowding_boxplots.png", dpi=80)
    plt.close(fig)
    # F1 vs N (cf. paper Fig. 4): clustered, N = 500 from the 4x training volume
    g = df[(df.k_factor == 1.0) & (df.scenario.isin(["clustered", "clustered_big"]))]
    g = g[(g.scenario == "clustered") | (g.n > 296)]
    ns = sorted(g["n"].unique())
    if len(ns) > 1:
        configs = ["PU+SWA", "PU", "PN", "PN-noSWA", "FS"]
        groups = [
            [g[(g.n == n) & (g.config == c)]["f1_auto_test"].tolist() for c in configs] for n in ns
        ]
        _boxplot_figure(
            results / "crowding_n_boxplots.png",
            groups,
            [str(n) if n < 297 else f"{n} (4x vol.)" for n in ns],
            configs,
            title="clustered (300 particles): F1 vs N, auto threshold (cf. paper Fig. 4)",
            ylim=(0.6, 1.01),
            figsize=(9, 4),
            xlabel="annotated particles N",
        )
    # spread at N = 10 with / without averaging (cf. paper Fig. 5)
    configs = ["PU+SWA", "PU+EMA", "PU", "PN", "PN-noSWA"]
    scen = [s for s in ("base", "clustered") if (n10.scenario == s).any()]
    if scen:
        groups = [
            [n10[(n10.scenario == s) & (n10.config == c)]["f1_auto_test"].tolist() for c in configs]
            for s in scen
        ]
        _boxplot_figure(
            results / "crowding_swa_boxplots.png",
            groups,
            scen,
            configs,
            title="N = 10: spread with / without weight averaging (cf. paper Fig. 5)",
            ylim=(0.7, 1.01),
            figsize=(7, 4),
        )


def crowding_section(results: Path) -> str:
    every = read(results)
    if every.empty:
        return ""
    df = every[every["radius_um"] == 0.15]
    plots(df, results)
    n10 = df[(df["n"] == 10) & (df["k_factor"] == 1.0)]
    parts = [
        "### Crowding x threshold (crowding.py): N = 10, auto threshold, test volume\n",
        n10_table(n10),
        "\n### Threshold rule, N = 10: F1 median (mean ± sd), test volume\n",
        threshold_table(n10, "test"),
        "\n### Threshold rule, N = 10: F1 median (mean ± sd), validation volume\n",
        threshold_table(n10, "val"),
    ]
    if (df["n"] != 10).any():
        parts += [
            "\n### Clustered: F1 vs N, median (runs), auto threshold, test volume\n",
            ngrid_pivot(df),
            "\n### Clustered: F1 vs N in detail (auto threshold, test)\n",
            ngrid_table(df),
        ]
    # ablation_*.jsonl: reruns of earlier runs (same seeds) only to record the step counts
    extra = read(results, "ablation_*.jsonl")
    abl = ablation_table(pd.concat([df, extra], ignore_index=True) if len(extra) else df)
    if abl:
        parts += [
            "\n### Post-processing ablation (auto threshold, test volume, mean per run)\n",
            abl,
        ]
    if (df["k_factor"] != 1.0).any():
        parts += ["\n### k misspecified in training and threshold (base, N = 10)\n", kmis_table(df)]
    if (every["radius_um"] != 0.15).any():
        parts += ["\n### Larger particle radius r (base, N = 10): pi rises\n", radius_table(every)]
    return "\n".join(parts) + "\n"
