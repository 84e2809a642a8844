"""The file names of the library's on-disk contracts, defined once.

A converted data directory holds `vocab.txt` and `metadata.json` beside its shards
(`refseg_tf.data.schema`); a model directory (`refseg-train`) holds `config.json`,
`preprocessor.json`, `vocab.txt` and `model.keras`; an export copies `vocab.txt` as an asset.
Every module that reads or writes these files takes the names from here. Plain Python: any
module may import it.
"""

CONFIG_FILENAME = "config.json"  # the training config of a model directory
VOCABULARY_FILENAME = "vocab.txt"  # one word a line, the specials first
PREPROCESSOR_FILENAME = "preprocessor.json"  # `ReferringPreprocessor.save`
METADATA_FILENAME = "metadata.json"  # what a conversion wrote (splits, shard files, vocabulary)
MODEL_FILENAME = "model.keras"  # the final model of a training run
