"""`refseg-convert`: converts a referring-segmentation dataset into refseg-tf TFRecords.

Examples:

    # RefCOCO (UNC split) from the refer layout and the COCO train2014 images
    refseg-convert --format=refer --data_root=/data/refer/data --dataset=refcoco --split_by=unc \\
        --image_root=/data/coco/train2014 --output_dir=/data/tfrecords/refcoco_unc --num_workers=8

    # the synthetic dataset written by `refseg-synthetic --output_dir=/tmp/synth`
    python -m refseg_tf.convert --format=refer --data_root=/tmp/synth --dataset=synthetic \\
        --split_by=unc --output_dir=/tmp/synth_tfrecords

    # ReferIt (Hu et al.'s layout) and TFDS ref_coco joined with COCO instances
    refseg-convert --format=referit --data_root=... --image_root=... --mask_root=... \\
        --output_dir=...
    refseg-convert --format=tfds --tfds_data_dir=... --tfds_config=refcoco_unc \\
        --coco_instances=.../instances_train2014.json --image_root=.../train2014 --output_dir=...

A re-run with the same arguments keeps the finished shards, so an interrupted conversion can be
resumed. See datasets/README.md for the sources of each dataset and the expected counts.
"""

from refseg_tf.cli import quiet_tensorflow_startup

quiet_tensorflow_startup(__name__)  # a command: before TensorFlow is imported (issue 21)

import importlib
import sys

from absl import app, flags, logging

FORMAT_MODULES = {
    "refer": "refseg_tf.data.converters.refer",
    "referit": "refseg_tf.data.converters.referit",
    "tfds": "refseg_tf.data.converters.tfds_refcoco",
}

# (kind, name, default, help, extra keyword arguments) of every flag of every format.
_FLAG_SPECS = (
    # common
    ("enum", "format", "refer", "Source format.", {"enum_values": sorted(FORMAT_MODULES)}),
    ("string", "output_dir", None, "Folder for the shards, vocab.txt and metadata.json.", {}),
    ("integer", "num_shards", None, "Shards per split (exclusive with --images_per_shard).", {}),
    (
        "integer",
        "images_per_shard",
        None,
        "Images per shard (default 1000 when --num_shards is not given).",
        {},
    ),
    ("integer", "num_workers", 0, "Worker processes decoding images and masks (0: none).", {}),
    ("integer", "min_count", 1, "Minimum count of a word of the vocabulary split.", {}),
    (
        "float",
        "max_skip_fraction",
        0.05,
        "Stop with an error when more than this share of a split's images is skipped (1: never).",
        {},
    ),
    ("bool", "progress", True, "Show a progress bar.", {}),
    (
        "enum",
        "tokenizer",
        "refseg",
        "Tokeniser of the vocabulary and of the skip rule for wordless sentences: 'refseg' (the "
        "library's) or 'authors' (Hu/RMI/RRN code, re.split(r'(\\W+)')). Train with the same "
        "data.tokenizer.",
        {"enum_values": ["refseg", "authors"]},
    ),
    (
        "string",
        "vocabulary",
        None,
        "A word list (one word per line, <pad> <go> <eos> <unk> first, e.g. the authors' "
        "vocabulary_referit.txt) to use as vocab.txt with its ids, instead of building one; "
        "metadata.json counts the out-of-vocabulary tokens.",
        {},
    ),
    (
        "bool",
        "word_ids",
        False,
        "Also store each sentence's word ids (vocab.txt's, by --tokenizer) beside its text, "
        "with their fingerprint in metadata.json: training and evaluation then read them "
        "instead of tokenising (when their vocabulary and tokenizer are these).",
        {},
    ),
    # shared by several formats
    (
        "string",
        "data_root",
        None,
        "refer: folder with <dataset>/instances.json and <dataset>/refs(<split_by>).p; "
        "referit: the folder of the referit_query_*.json files.",
        {},
    ),
    (
        "string",
        "image_root",
        None,
        "Folder of the images. refer: default <data_root>/images; COCO: the train2014 folder.",
        {},
    ),
    # refer
    ("string", "dataset", "refcoco", "refer: refcoco, refcoco+, refcocog, synthetic, ...", {}),
    ("string", "split_by", "unc", "refer: unc, google or umd (selects refs(<split_by>).p).", {}),
    (
        "integer",
        "max_pickle_objects",
        None,
        "refer: objects the refs pickle may hold once shared references are copied (default "
        "1,000,000 plus 2 per byte of the file); a larger pickle is refused as a possible bomb.",
        {},
    ),
    (
        "enum",
        "sentence_field",
        "sent",
        "refer: sentence field to store: 'sent' (cleaned) or 'raw' (original).",
        {"enum_values": ["sent", "raw"]},
    ),
    # referit
    ("string", "mask_root", None, "referit: folder of the SAIAPR-12 region masks (.mat).", {}),
    # tfds
    ("string", "tfds_data_dir", None, "tfds: the TFDS data_dir holding a prepared ref_coco.", {}),
    ("string", "tfds_config", None, "tfds: ref_coco config, e.g. refcoco_unc, refcocog_umd.", {}),
    ("string", "coco_instances", None, "tfds: COCO instances_train2014.json (the masks).", {}),
)
_DEFINERS = {
    "enum": flags.DEFINE_enum,
    "string": flags.DEFINE_string,
    "integer": flags.DEFINE_integer,
    "float": flags.DEFINE_float,
    "bool": flags.DEFINE_bool,
}


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines the flags of every format on `flag_values` (skipping names already defined).

    Flags are defined when `run()` starts, not at import, so importing this module next to other
    entry points never clashes over flag names.
    """
    for kind, name, default, help_text, extra in _FLAG_SPECS:
        if name not in flag_values:
            _DEFINERS[kind](
                name=name, default=default, help=help_text, flag_values=flag_values, **extra
            )


def make_reader(flag_values):
    """Imports the format's converter module and returns its reader."""
    module = importlib.import_module(FORMAT_MODULES[flag_values.format])
    return module.make_reader(flag_values)


def convert_with_flags(flag_values: flags.FlagValues) -> int:
    """Runs a conversion from parsed flags; returns the exit status (0 or 1 for bad data).

    Raises:
        app.UsageError: a missing or invalid flag.
    """
    if not flag_values.output_dir:
        raise app.UsageError("--output_dir is required.")
    from refseg_tf.data.converters.report import ConversionError
    from refseg_tf.data.converters.writer import write_dataset
    from refseg_tf.cli import tensorflow_file_error_message
    from refseg_tf.text import Vocabulary, VocabularyError

    vocabulary = None
    if flag_values.vocabulary:
        try:
            vocabulary = Vocabulary.load(flag_values.vocabulary)
        except VocabularyError as error:
            raise app.UsageError(f"--vocabulary: {error}") from error

    try:
        reader = make_reader(flag_values)
    except ConversionError as error:
        return _fail(error)
    except ValueError as error:  # a missing or wrong flag
        raise app.UsageError(str(error)) from error
    try:
        write_dataset(
            reader,
            flag_values.output_dir,
            num_shards=flag_values.num_shards,
            images_per_shard=flag_values.images_per_shard,
            num_workers=flag_values.num_workers,
            min_count=flag_values.min_count,
            max_skip_fraction=flag_values.max_skip_fraction,
            show_progress=flag_values.progress,
            tokenizer=flag_values.tokenizer,
            vocabulary=vocabulary,
            word_ids=flag_values.word_ids,
        )
    except ConversionError as error:
        return _fail(error)
    except OSError as error:  # a read-only or full output folder: the message names the path
        return _fail(error)
    except Exception as error:
        message = tensorflow_file_error_message(error)
        if message is None:
            raise
        return _fail(message)
    return 0


def _fail(error) -> int:
    logging.error("%s", error)
    print(f"refseg-convert: error: {error}", file=sys.stderr)
    return 1


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    return convert_with_flags(flags.FLAGS)


def run():
    """Console-script entry point (`refseg-convert`)."""
    define_flags(flags.FLAGS)
    app.run(main)


if __name__ == "__main__":
    run()
