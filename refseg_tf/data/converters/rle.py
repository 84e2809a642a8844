"""Validation of COCO run-length encodings before pycocotools decodes them.

`pycocotools.mask.decode` allocates the mask without clearing it and writes the runs into it,
so runs that cover fewer than height*width pixels leave the rest of the mask as whatever the
memory held: a different mask on every call. Runs that cover more pixels are cut off without a
word. Every converter therefore checks, with `rle_problem`, that the runs of an RLE cover
exactly height*width pixels before decoding it, and skips the ref otherwise.

The compressed form (`counts` a string) is the one of pycocotools' `rleToString`: each run is
a little-endian sequence of 5-bit groups stored as characters 48 + value, bit 5 (0x20) marking
that another group follows and bit 4 of the last group the sign; from the third run on, the
stored number is the difference to the run two places before.

Reference: pycocotools `maskApi.c` (`rleDecode`, `rleToString`, `rleFrString`).
"""

from typing import Optional

_FIRST_CHARACTER = 48
_LAST_CHARACTER = 48 + 63


def compressed_runs(counts: str) -> list:
    """The run lengths of a compressed RLE string (as `rleFrString` reads them).

    Raises:
        ValueError: a character outside the encoding's range, or a string cut inside a run.
    """
    runs = []
    position = 0
    while position < len(counts):
        value, group, more = 0, 0, True
        while more:
            if position >= len(counts):
                raise ValueError("compressed RLE counts end inside a run")
            code = ord(counts[position])
            if not _FIRST_CHARACTER <= code <= _LAST_CHARACTER:
                raise ValueError(
                    f"compressed RLE counts hold the character {counts[position]!r} at "
                    f"position {position}, outside the encoding's range"
                )
            code -= _FIRST_CHARACTER
            value |= (code & 0x1F) << (5 * group)
            more = bool(code & 0x20)
            position += 1
            group += 1
            if not more and code & 0x10:
                value |= -1 << (5 * group)
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def rle_problem(counts, height: int, width: int) -> Optional[str]:
    """None when the runs of `counts` (a list or a compressed string) cover exactly the mask.

    Args:
        counts: uncompressed run lengths (a list of integers) or a compressed RLE (str/bytes).
        height, width: the mask size the RLE claims.

    Returns:
        None, or a short description of what is wrong (for a skip message).
    """
    if isinstance(counts, bytes):
        try:
            counts = counts.decode("ascii")
        except UnicodeDecodeError:
            return "compressed RLE counts are not ASCII"
    if isinstance(counts, str):
        try:
            runs = compressed_runs(counts)
        except ValueError as error:
            return str(error)
    elif isinstance(counts, (list, tuple)):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in counts):
            return "uncompressed RLE counts must be integers"
        runs = list(counts)
    else:
        return f"RLE counts must be a list or a string; found {type(counts).__name__}"
    if any(run < 0 for run in runs):
        return "RLE counts hold a negative run"
    covered, expected = sum(runs), int(height) * int(width)
    if covered != expected:
        return f"RLE runs cover {covered} pixels, the mask has {height}x{width} = {expected}"
    return None
