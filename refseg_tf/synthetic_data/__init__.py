"""refseg_tf.synthetic_data: synthetic referring-segmentation sets in the real refer format.

`generate(output_dir, num_images, seed, image_size, style)` writes images, COCO instances and
refs that `refseg-convert --format=refer` reads (the `refseg-synthetic` entry point,
`refseg_tf/synthetic.py`, runs it). Two independently drawn styles:

- `shapes` (`refseg_tf.synthetic_data.shapes`): coloured shapes, an expression grammar with its
  reference semantics (`resolve_expression`), COCO polygon / RLE masks, image-level splits;
- `shapes_v2` (`refseg_tf.synthetic_data.shapes_v2`): other shapes, colours, words and rendering,
  to check that the synthetic configs were not tuned to the first style.
"""

from refseg_tf.synthetic_data import shapes, shapes_v2

STYLES = ("shapes", "shapes_v2")


def generate(
    output_dir: str,
    num_images: int = 200,
    seed: int = 0,
    image_size: int = 128,
    style: str = "shapes",
) -> dict:
    """Writes a synthetic refer-format data set; returns a summary dict (counts, paths, splits).

    Args:
        output_dir: data root; receives `images/`, `synthetic/instances.json` and
            `synthetic/refs(unc).p` (existing files of the same names are replaced).
        num_images: number of images (scenes) to draw.
        seed: non-negative seed; the same arguments give byte-identical files.
        image_size: the long side of every image in pixels (at least 32).
        style: "shapes" (`shapes.generate`) or "shapes_v2" (`shapes_v2.generate`), an
            independently drawn style with its own shapes, colours, words and rendering, to
            check models on data they were not tuned on. Both write the same refer layout
            (`refer_format`).

    Example:
        summary = generate("/tmp/shapes", num_images=300, seed=0, image_size=96)
    """
    if style not in STYLES:
        raise ValueError(f"`style` must be one of {STYLES}; received {style!r}.")
    module = shapes_v2 if style == "shapes_v2" else shapes
    return module.generate(output_dir, num_images, seed, image_size)


__all__ = ["STYLES", "generate"]
