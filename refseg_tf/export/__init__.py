"""Export of trained models: a SavedModel for TF Serving, a LiteRT model and their contract.

`export_model(model_dir, output_dir)` is what `refseg-export` runs; `ServingModule` is the
serving graph; `TFLiteSegmenter` runs the `.tflite` file; `SavedModelPredictor` predicts with
the SavedModel alone (`refseg-predict --saved_model`). TensorFlow-only code (not model code).
"""

from refseg_tf.export.exporter import (
    EXPORT_CONTRACT,
    EXPORT_CONTRACT_VERSION,
    FORMATS,
    SAVED_MODEL_DIR,
    TFLITE_FILENAME,
    describe_signature,
    export_model,
)
from refseg_tf.export.predictor import (
    SavedModelPredictor,
    call_signature,
    image_bytes_for_serving,
)
from refseg_tf.export.serving import (
    DEFAULT_MAX_PIXELS,
    IMAGE_FORMATS,
    SERVING_SIGNATURE,
    STORED_STATE,
    TENSOR_SIGNATURE,
    THRESHOLD_SIGNATURE,
    ServingModule,
    decode_image_bytes,
    score_for_serving,
    stored_state_size,
)
from refseg_tf.export.tflite import QUANTIZATIONS, TFLiteSegmenter, convert_to_tflite

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "EXPORT_CONTRACT",
    "EXPORT_CONTRACT_VERSION",
    "FORMATS",
    "IMAGE_FORMATS",
    "QUANTIZATIONS",
    "SAVED_MODEL_DIR",
    "SERVING_SIGNATURE",
    "STORED_STATE",
    "SavedModelPredictor",
    "call_signature",
    "ServingModule",
    "TENSOR_SIGNATURE",
    "THRESHOLD_SIGNATURE",
    "TFLITE_FILENAME",
    "TFLiteSegmenter",
    "convert_to_tflite",
    "decode_image_bytes",
    "describe_signature",
    "export_model",
    "image_bytes_for_serving",
    "score_for_serving",
    "stored_state_size",
]
