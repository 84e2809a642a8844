"""refseg_tf.synthetic_data: synthetic referring-segmentation sets in the real refer format.

`generate(output_dir, num_images, seed, image_size, style)` writes images, COCO instances and
refs that `refseg-convert --format=refer` reads (the `refseg-synthetic` entry point,
`refseg_tf/synthetic.py`, runs it). Two independently drawn styles:

- `shapes` (`refseg_tf.synthetic_data.shapes`): coloured shapes, an expression grammar with its
  reference semantics (`resolve_expression`), COCO polygon / RLE masks, image-level splits;
- `shapes_v2` (`refseg_tf.synthetic_data.shapes_v2`): other shapes, colours, words and rendering,
  to check that the synthetic configs were not tuned to the first style.
"""

from refseg_tf.synthetic_data.shapes import STYLES, generate

__all__ = ["STYLES", "generate"]
