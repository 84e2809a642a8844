"""Writes a synthetic referring-segmentation data set in the refer format.

Usage:
    refseg-synthetic --output_dir=DIR [--num_images=200 --seed=0 --image_size=128]
                     [--style=shapes|shapes_v2]
    python -m refseg_tf.synthetic --output_dir=DIR ...

Writes `DIR/images/*.jpg`, `DIR/synthetic/instances.json` and `DIR/synthetic/refs(unc).p`
(see `refseg_tf.synthetic_data.shapes`; `--style=shapes_v2` draws the second, independent scene style
of `refseg_tf.synthetic_data.shapes_v2`), then prints a short summary. The converter reads it with
data root `DIR`, dataset `synthetic`, split_by `unc` and image root `DIR/images`.

Flags are defined when `run()` starts (not at import), so importing this module next to other
entry points never clashes over flag names.
"""

from __future__ import annotations

from refseg_tf.cli import quiet_tensorflow_startup

quiet_tensorflow_startup(__name__)  # a command: before TensorFlow is imported (issue 21)

import sys
import time

from absl import app, flags


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines this tool's flags on `flag_values` (skipping any that already exist there)."""

    def define(kind, name, default, help_text, **bounds):
        if name not in flag_values:
            kind(name, default, help_text, flag_values=flag_values, **bounds)

    define(flags.DEFINE_string, "output_dir", None, "Data root for images/ and synthetic/.")
    define(flags.DEFINE_integer, "num_images", 200, "Number of images.", lower_bound=1)
    define(flags.DEFINE_integer, "seed", 0, "Random seed (same seed, same bytes).", lower_bound=0)
    define(
        flags.DEFINE_integer,
        "image_size",
        128,
        "Long side of each image in pixels.",
        lower_bound=32,
    )
    if "style" not in flag_values:
        flags.DEFINE_enum(
            "style",
            "shapes",
            ["shapes", "shapes_v2"],
            "Scene style: the default shapes, or the independently drawn shapes_v2.",
            flag_values=flag_values,
        )
    flags.mark_flag_as_required("output_dir", flag_values=flag_values)


def format_summary(summary: dict, seconds: float | None = None) -> str:
    """A few human-readable lines about a `generate` summary."""
    lines = [
        f"Wrote {summary['num_images']} images, {summary['num_refs']} refs and "
        f"{summary['num_sentences']} sentences to {summary['data_root']}"
        + (f" in {seconds:.1f} s." if seconds is not None else "."),
    ]
    for split, counts in summary["splits"].items():
        lines.append(
            f"  {split:<6} {counts['images']:>6} images {counts['refs']:>7} refs "
            f"{counts['sentences']:>7} sentences"
        )
    forms = ", ".join(f"{name} {count}" for name, count in summary["segmentation_forms"].items())
    length = summary["sentence_length"]
    lines += [
        f"  style: {summary.get('style', 'shapes')}",
        f"  segmentations: {forms}",
        f"  vocabulary: {len(summary['vocabulary'])} words; sentence length "
        f"{length['min']}-{length['max']} (mean {length['mean']:.2f})",
        f"  refer: data_root={summary['data_root']} dataset={summary['dataset']} "
        f"split_by={summary['split_by']} image_root={summary['image_root']}",
    ]
    return "\n".join(lines)


def run_with_flags(flag_values: flags.FlagValues = flags.FLAGS) -> dict:
    """Generates the data set the parsed flags describe, prints and returns the summary."""
    from refseg_tf.synthetic_data import generate

    start = time.perf_counter()
    summary = generate(
        flag_values.output_dir,
        num_images=flag_values.num_images,
        seed=flag_values.seed,
        image_size=flag_values.image_size,
        style=flag_values.style,
    )
    print(format_summary(summary, time.perf_counter() - start))
    sys.stdout.flush()
    return summary


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    run_with_flags(flags.FLAGS)


def run() -> None:
    """Console-script entry point (`refseg-synthetic`)."""
    define_flags(flags.FLAGS)
    app.run(main)


if __name__ == "__main__":
    run()
