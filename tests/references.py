"""Small numpy references of the authors' rules, written from their code, shared by the tests.

Never built from the library's own functions: tests compare the library against these.
"""

import numpy as np


def tf1_resize_reference(values, out_height, out_width):
    """numpy float64 TF1 `resize_bilinear` (align_corners=False): pixel o samples `o * in / out`."""
    in_height, in_width = values.shape
    result = np.zeros((out_height, out_width))
    for y in range(out_height):
        source_y = y * in_height / out_height
        top = int(np.floor(source_y))
        bottom = min(top + 1, in_height - 1)
        dy = source_y - top
        for x in range(out_width):
            source_x = x * in_width / out_width
            left = int(np.floor(source_x))
            right = min(left + 1, in_width - 1)
            dx = source_x - left
            upper = values[top, left] * (1 - dx) + values[top, right] * dx
            lower = values[bottom, left] * (1 - dx) + values[bottom, right] * dx
            result[y, x] = upper * (1 - dy) + lower * dy
    return result
