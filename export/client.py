"""A small client for a refseg-tf model served by TF Serving: image + phrase -> mask and overlay.

    python export/client.py --server=localhost:8501 --protocol=rest --model_name=refseg \
        --image=photo.jpg --expression="the dog on the left" --output=mask.png

    python export/client.py --server=localhost:8500 --protocol=grpc --model_name=refseg \
        --image=photo.jpg --expression="the dog on the left" --output=mask.png

It needs only numpy, Pillow and `requests` (REST) or `tensorflow-serving-api` (gRPC), not the
refseg_tf library. The requests and responses are those of `export/README.md`: the
`serving_default` signature with inputs `image_bytes` (the file's bytes; base64 in JSON) and
`expression`, outputs `mask` (uint8 0/1), `probability` and `image_size`.
"""

import argparse
import base64
import io
import os

import numpy as np

SIGNATURE = "serving_default"
# TF Serving decodes these as they are; other files (or photos with an EXIF rotation, which the
# graph does not apply) are sent as a PNG of the picture as Pillow shows it.
_SERVED_AS_IS = ("JPEG", "PNG", "GIF", "BMP")
_EXIF_ORIENTATION = 0x0112


def read_image_bytes(path):
    """(bytes to send, RGB uint8 picture for the overlay) of an image file."""
    from PIL import Image, ImageOps

    with open(path, "rb") as f:
        data = f.read()
    with Image.open(io.BytesIO(data)) as image:
        rotated = image.getexif().get(_EXIF_ORIENTATION, 1) != 1
        served_as_is = image.format in _SERVED_AS_IS and not rotated
        picture = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    if not served_as_is:
        buffer = io.BytesIO()
        Image.fromarray(picture).save(buffer, format="PNG")
        data = buffer.getvalue()
    return data, picture


# ------------------------------------------------------------------------------------- REST


def build_rest_request(image_bytes, expressions):
    """The JSON body of `POST /v1/models/<name>:predict` (columnar "inputs" format).

    `image_bytes` and `expressions` are one item each or equal-length lists.
    """
    if isinstance(image_bytes, bytes):
        image_bytes, expressions = [image_bytes], [expressions]
    return {
        "signature_name": SIGNATURE,
        "inputs": {
            "image_bytes": [{"b64": base64.b64encode(b).decode("ascii")} for b in image_bytes],
            "expression": list(expressions),
        },
    }


def parse_rest_response(body):
    """[(mask uint8 [h, w], probability float32 [h, w]), ...] from a REST predict response."""
    outputs = body["outputs"]
    return _crop(
        np.asarray(outputs["mask"], np.uint8),
        np.asarray(outputs["probability"], np.float32),
        np.asarray(outputs["image_size"], np.int64),
    )


def predict_rest(server, model_name, image_bytes, expression, version=None, timeout=60.0):
    import requests

    version_path = f"/versions/{version}" if version else ""
    url = f"http://{server}/v1/models/{model_name}{version_path}:predict"
    response = requests.post(url, json=build_rest_request(image_bytes, expression), timeout=timeout)
    if response.status_code != 200:
        raise RuntimeError(f"{url} answered {response.status_code}: {response.text}")
    return parse_rest_response(response.json())


# ------------------------------------------------------------------------------------- gRPC


def build_grpc_request(image_bytes, expressions, model_name, version=None):
    """A `tensorflow_serving.apis.predict_pb2.PredictRequest` for `serving_default`."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    if isinstance(image_bytes, bytes):
        image_bytes, expressions = [image_bytes], [expressions]
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = SIGNATURE
    if version:
        request.model_spec.version.value = int(version)
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(list(image_bytes), dtype=tf.string))
    encoded = [e.encode("utf-8") if isinstance(e, str) else e for e in expressions]
    request.inputs["expression"].CopyFrom(tf.make_tensor_proto(encoded, dtype=tf.string))
    return request


def parse_grpc_response(response):
    """[(mask, probability), ...] from a `PredictResponse`."""
    import tensorflow as tf

    outputs = response.outputs
    return _crop(
        tf.make_ndarray(outputs["mask"]),
        tf.make_ndarray(outputs["probability"]),
        tf.make_ndarray(outputs["image_size"]),
    )


def predict_grpc(server, model_name, image_bytes, expression, version=None, timeout=60.0):
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(server) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = build_grpc_request(image_bytes, expression, model_name, version)
        return parse_grpc_response(stub.Predict(request, timeout=timeout))


# ------------------------------------------------------------------------------------- files


def _crop(masks, probabilities, sizes):
    """Each image's maps without the zero padding of the batch."""
    return [
        (masks[i, :height, :width], probabilities[i, :height, :width])
        for i, (height, width) in enumerate(sizes)
    ]


def write_mask_and_overlay(mask, picture, output, overlay=None, alpha=0.5):
    """Writes the mask as a 0/255 PNG and a red overlay on the picture as a JPEG."""
    from PIL import Image

    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(output, format="PNG")
    overlay = overlay or os.path.splitext(output)[0] + "_overlay.jpg"
    shown = picture.astype(np.float32)
    red = np.array([255.0, 0.0, 0.0], np.float32)
    foreground = mask.astype(bool)
    shown[foreground] = (1 - alpha) * shown[foreground] + alpha * red
    Image.fromarray(shown.round().astype(np.uint8)).save(overlay, format="JPEG", quality=92)
    return output, overlay


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", default="localhost:8501",
                        help="host:port (8501 = REST, 8500 = gRPC by default in TF Serving)")
    parser.add_argument("--protocol", choices=("rest", "grpc"), default="rest")
    parser.add_argument("--model_name", default="refseg")
    parser.add_argument("--version", type=int, default=None)
    parser.add_argument("--image", required=True)
    parser.add_argument("--expression", required=True)
    parser.add_argument("--output", required=True, help="mask PNG (0/255) at the image's size")
    parser.add_argument("--overlay", default=None, help="default: <output>_overlay.jpg")
    args = parser.parse_args(argv)
    image_bytes, picture = read_image_bytes(args.image)
    predict = predict_rest if args.protocol == "rest" else predict_grpc
    [(mask, _)] = predict(args.server, args.model_name, image_bytes, args.expression, args.version)
    output, overlay = write_mask_and_overlay(mask, picture, args.output, args.overlay)
    print(f"Mask ({mask.shape[1]}x{mask.shape[0]}, {mask.mean():.1%} foreground) -> {output}")
    print(f"Overlay -> {overlay}")


if __name__ == "__main__":
    main()
