"""`refseg-serve`: a local web page to try a model: upload an image, type a phrase, get the mask.

    refseg-serve --model_dir=runs/rmi            # then open http://127.0.0.1:8765/
    refseg-serve --saved_model=exported/saved_model/1 --port=9000

The page (`refseg_tf.webdemo`) shows the mask over the image, a download of the mask (the PNG
`refseg-predict` writes) and, for models that have them (RMI, RRN), the per-word maps. It binds
to 127.0.0.1 (this machine only) unless `--host` says otherwise; it has no authentication.
"""

from refseg_tf.cli import quiet_tensorflow_startup

quiet_tensorflow_startup(__name__)  # a command: before TensorFlow is imported (issue 21)

from absl import app, flags, logging

from refseg_tf.cli import user_errors_as_messages


def define_flags():
    if "max_upload_mb" in flags.FLAGS:
        return
    from refseg_tf import webdemo

    if "model_dir" not in flags.FLAGS:
        flags.DEFINE_string("model_dir", None, "A directory written by refseg-train.")
    if "saved_model" not in flags.FLAGS:
        flags.DEFINE_string("saved_model", None, "Or: a SavedModel version folder written by "
                            "refseg-export (OUT/saved_model/1).")
    if "checkpoint" not in flags.FLAGS:
        flags.DEFINE_string("checkpoint", "auto", "'auto', 'final', 'latest' or a checkpoint path.")
    flags.DEFINE_string("host", webdemo.DEFAULT_HOST, "Address to bind; 0.0.0.0 exposes the "
                        "page to the network (no authentication).")
    flags.DEFINE_integer("port", webdemo.DEFAULT_PORT, "Port; 0 picks a free one.",
                         lower_bound=0, upper_bound=65535)
    flags.DEFINE_integer("max_pixels", webdemo.DEFAULT_MAX_PIXELS,
                         "Larger images are refused before they are decoded.", lower_bound=1)
    flags.DEFINE_float("max_upload_mb", webdemo.DEFAULT_MAX_UPLOAD_BYTES / 2**20,
                       "Larger files are refused before they are read.", lower_bound=0.001)
    flags.DEFINE_float("read_timeout", webdemo.DEFAULT_READ_TIMEOUT,
                       "Seconds a connection may stall (idle or inside a request body) before "
                       "it is closed.", lower_bound=0.001)
    flags.mark_flags_as_mutual_exclusive(["model_dir", "saved_model"], required=True)


@user_errors_as_messages("refseg-serve")
def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from refseg_tf import webdemo

    FLAGS = flags.FLAGS
    options = dict(max_pixels=FLAGS.max_pixels,
                   max_upload_bytes=max(1, int(FLAGS.max_upload_mb * 2**20)))
    if FLAGS.saved_model:
        service = webdemo.DemoService.from_saved_model(FLAGS.saved_model, **options)
    else:
        service = webdemo.DemoService.from_model_dir(FLAGS.model_dir, FLAGS.checkpoint, **options)
    server = webdemo.make_server(service, FLAGS.host, FLAGS.port, FLAGS.read_timeout)
    print(f"refseg-serve: {service.backend.model_name} from {service.backend.source} at "
          f"{server.url} (Ctrl+C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        logging.info("Stopped.")
    finally:
        server.server_close()


def run():
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
