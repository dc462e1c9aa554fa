#!/usr/bin/env python3
"""Draws the figures of BENCHMARKS.md from the raw results the bench scripts keep.

    bench/python/.venv/bin/python bench/plot.py [--results bench/results] [--out docs/img]

Reads bench/results/stream/ (written by bench/stream.sh) and
bench/results/online/ (bench/online.sh) and writes PNGs:

    stream-throughput.png   replies/s and CPU per request, recstream against the Python peers
    latency-cdf.png         request latency CDFs per broker, beside the broker's own round trip
    freshness-cdf.png       rating-to-reply freshness CDFs
    prequential.png         prequential RMSE and hit rate at 10 along the replayed timeline

Each figure's footer names the script, command, date, commit and machine of
the run it was drawn from (the results folder's meta.json), so a figure can
always be traced to a rerunnable command. A figure whose results are missing
is skipped with a message; nothing drawn at all is an error.
"""

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on a build machine
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

NOISE = "2 shared cores, other builds running: single runs vary by 20-40%; compare within a run."
COLOURS = {"recstream": "#1f77b4", "vectorized": "#ff7f0e", "notebook": "#d62728"}


def footer(fig, meta, note=NOISE):
    """The run a figure comes from, and the caveat about the machine."""
    fig.text(
        0.01,
        0.01,
        f"$ {meta['command']}   ({meta['date']}, commit {meta['commit']}, {meta['machine']})\n{note}",
        fontsize=7,
        color="#555555",
        va="bottom",
    )


def read_meta(folder):
    return json.loads((folder / "meta.json").read_text())


def read_runs(folder, prefix):
    """The JSON results named PREFIX-NAME.json, by NAME."""
    return {p.stem.removeprefix(f"{prefix}-"): json.loads(p.read_text()) for p in sorted(folder.glob(f"{prefix}-*.json"))}


def finish(fig, path, title, meta, note=NOISE):
    """Title, footer, file."""
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    footer(fig, meta, note)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ms(us):
    return us / 1000.0


def cdf_axes(ax, xlabel):
    """A CDF on a log time axis, with a logit quantile axis that shows the tail."""
    ax.set_xscale("log")
    ax.set_yscale("logit")
    ax.set_ylim(0.01, 0.9999)
    ax.set_yticks([0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999])
    ax.yaxis.set_major_formatter(FuncFormatter(lambda q, _: f"p{q * 100:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda q, _: ""))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("quantile (share of samples at or below)")
    ax.grid(True, which="major", alpha=0.3)


def plot_cdf(ax, table, **style):
    """Draws a (quantile, microseconds) table; the max (quantile 1) is off a logit axis."""
    points = [(ms(v), q) for q, v in table if q < 1.0 and v > 0]
    if points:
        xs, ys = zip(*points)
        ax.plot(xs, ys, **style)


def throughput(folder, out):
    rows = list(csv.DictReader((folder / "throughput.csv").open()))
    consumers = list(dict.fromkeys(r["consumer"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    for ax, key, label, better in (
        (axes[0], "replies_per_second", "replies per second (log)", "higher is better"),
        (axes[1], "cpu_us_per_request", "CPU per request, microseconds (log)", "lower is better"),
    ):
        for i, consumer in enumerate(consumers):
            values = [float(r[key]) for r in rows if r["consumer"] == consumer]
            median = statistics.median(values)
            ax.bar(i, median, color=COLOURS.get(consumer, "grey"), alpha=0.8)
            ax.scatter([i] * len(values), values, color="black", s=12, zorder=3)
            ax.annotate(f"{median:,.0f}" if median >= 50 else f"{median:.1f}", (i, median),
                        ha="left", va="bottom", fontsize=9, xytext=(8, 2), textcoords="offset points")
        ax.set_xticks(range(len(consumers)), [c if c == "recstream" else f"Python, {c}" for c in consumers])
        ax.set_yscale("log")
        ax.set_ylim(bottom=1)  # bars from 1, so their heights compare on the log scale
        ax.set_ylabel(label)
        ax.set_title(f"{label.split(',')[0].split(' (')[0]} ({better})", fontsize=10)
        ax.grid(True, axis="y", which="major", alpha=0.3)
    rounds = max(int(r["round"]) for r in rows)
    finish(fig, out / "stream-throughput.png",
           f"Throughput through Tansu: bars are medians of {rounds} round(s), dots each round", read_meta(folder))


def latency(folder, out):
    runs = read_runs(folder, "latency")
    brokers = [("embedded", "embedded broker (`recstream run`)"), ("tansu", "Tansu 0.6 process")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 5), sharey=True)
    for ax, (broker, title) in zip(axes, brokers):
        for name, stats in runs.items():
            if not name.startswith(broker):
                continue
            if "-alone" in name:
                plot_cdf(ax, stats["round_trip_cdf_us"], color="grey", linestyle="--",
                         label="broker alone: produce, read back")
            else:
                plot_cdf(ax, stats["round_trip_cdf_us"], color=COLOURS["recstream"],
                         label="recstream: client send to reply read")
                plot_cdf(ax, stats["timestamp_to_timestamp_cdf_us"], color="#2ca02c", linestyle=":",
                         label="recstream: request ts to reply ts (1 ms steps)")
        cdf_axes(ax, "milliseconds (log)")
        count = sum(1 for name in runs if name.startswith(broker) and "-alone" not in name)
        ax.set_title(f"{title}, {count} run(s), one line each", fontsize=10)
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        ax.legend(unique.values(), unique.keys(), fontsize=7, loc="lower right")
    finish(fig, out / "latency-cdf.png",
           "Latency at a steady 1,000 requests/s: recstream beside the broker's own round trip", read_meta(folder))


def freshness(folder, out):
    runs = read_runs(folder, "freshness")
    styles = {
        "embedded-ratings-only": ("embedded broker, ratings only", dict(color="#2ca02c")),
        "tansu": ("Tansu, separate processes, + 1,000 requests/s", dict(color="#9467bd", linestyle="--")),
    }
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, stats in runs.items():
        label, style = styles.get(name, (None, None))
        if label is None:
            run = name.rsplit("-", 1)[-1]
            label, style = f"embedded broker, + 1,000 requests/s, run {run}", dict(color=COLOURS["recstream"], alpha=0.5 + 0.15 * int(run))
        p99 = ms(stats["freshness_us"]["p99"])
        p99 = "p99 at the 1 s cap" if p99 >= 1000 else f"p99 {p99:,.0f} ms"
        plot_cdf(ax, stats["freshness_cdf_us"], label=f"{label} ({p99})", **style)
    cdf_axes(ax, "rating to the first reply reflecting it, milliseconds (log; probes give up at 1 s)")
    ax.legend(fontsize=8, loc="upper left")
    finish(fig, out / "freshness-cdf.png", "Freshness at 1,000 ratings/s (`recstream bench freshness`)", read_meta(folder))


def prequential(folder, out):
    report = json.loads((folder / "prequential.json").read_text())
    windows = report["windows"]
    xs = [report["train_ratings"] + w["replayed"] for w in windows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharex=True)
    for ax, key, label, better in (
        (axes[0], "rmse", "RMSE", "lower is better"),
        (axes[1], "hit_rate_at_10", "hit rate at 10", "higher is better"),
    ):
        for contender, style in (("online", dict(color=COLOURS["recstream"])),
                                 ("frozen", dict(color="grey", linestyle="--"))):
            total = report[contender][key]
            ax.plot(xs, [w[contender][key] for w in windows], marker="o", markersize=3,
                    label=f"{contender} (whole replay {total:.4f})", **style)
        ax.set_xlabel("ratings in timestamp order (the model was trained on the first "
                      f"{report['train_ratings']:,})")
        ax.set_ylabel(f"{label} within each slice of {windows[0]['replayed']:,} ratings")
        ax.set_title(f"{label} ({better})", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    meta = dict(read_meta(folder))
    meta["command"] += "  (recstream eval --prequential --seed 1 --json)"
    finish(fig, out / "prequential.png",
           "Prequential replay of ML-100K's second half: learning online against the frozen batch model", meta,
           note="A deterministic replay (seed 1): accuracy, not timing, so the machine's noise does not enter.")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("bench/results"))
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    figures = [
        (throughput, "stream", "throughput.csv"),
        (latency, "stream", "latency-*.json"),
        (freshness, "online", "freshness-*.json"),
        (prequential, "online", "prequential.json"),
    ]
    drawn = 0
    for draw, folder, needs in figures:
        path = args.results / folder
        if not (path / "meta.json").exists() or not list(path.glob(needs)):
            print(f"plot.py: no {path / needs}; run bench/{folder}.sh first; {draw.__name__} skipped", file=sys.stderr)
            continue
        draw(path, args.out)
        drawn += 1
        print(f"plot.py: drew {draw.__name__} from {path}", file=sys.stderr)
    if drawn == 0:
        sys.exit("plot.py: no results to draw from")


if __name__ == "__main__":
    main()
