"""The TF.js export in a real browser (Debian's chromium, headless): the module loads its files
over HTTP, decodes PNG bytes and a Blob with the browser's own decoder (createImageBitmap and a
canvas), and answers as Keras does. The page posts its answers back to the test's HTTP server."""

import json
import os
import subprocess
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image
from tfjs_models import field, randomize

from cookline.spec import train as train_spec
from cookline.v1 import pipeline_pb2
from helpers import ROOT, SUPPORT
from services.train import models, tfjs

TFJS_BUNDLE = os.path.join(SUPPORT, "tfjs", "node_modules", "@tensorflow", "tfjs", "dist", "tf.fesm.min.js")
CHROMIUM = "/usr/bin/chromium"  # Debian's package
DIGIT = os.path.join(ROOT, "examples", "data", "digits", "7", "0007.png")

PAGE = """<!doctype html>
<meta charset="utf-8">
<script type="importmap">{"imports": {"@tensorflow/tfjs": "/tf.js"}}</script>
<script type="module">
const post = (body) => fetch("/result", {method: "POST", body: JSON.stringify(body)});
try {
  const { load } = await import("/model/index.js");
  const model = await load();
  const bytes = new Uint8Array(await (await fetch("/digit.png")).arrayBuffer());
  const blob = new Blob([bytes], { type: "image/png" });
  await post({ bytes: await model.predict(bytes), blob: await model.predict(blob),
               pixels: await model.preprocess(bytes), tokens: model.tokens("ΣΊΣΥΦΟΣ x") });
} catch (e) {
  await post({ error: String(e.stack || e) });
}
</script>
"""


class _Handler(SimpleHTTPRequestHandler):
    """Serves the page's folder; POST /result hands the page's answer to the test."""

    def do_POST(self):  # http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(204)
        self.end_headers()
        self.server.result = json.loads(body)
        self.server.done.set()

    def log_message(self, *args):
        pass


def test_the_module_predicts_png_bytes_and_blobs_in_chromium(tmp_path):
    spec = train_spec.resolve(pipeline_pb2.TrainSpec(model="cnn", conv_filters=[4], hidden_units=[8]))
    model = models.build(spec, [8, 8, 1], 3, "uint8")
    randomize(model)
    site = tmp_path / "site"
    fields = {"image": field("image", "uint8", [8, 8, 1]), "label": field("label", "int32", [])}
    tfjs.write(models.Trained(model, [], fields, "image", ["a", "b", "c"]), "web", 1, str(site / "model"))
    os.symlink(TFJS_BUNDLE, site / "tf.js")
    os.symlink(DIGIT, site / "digit.png")
    (site / "index.html").write_text(PAGE)
    pixels = np.asarray(Image.open(DIGIT), np.uint8).reshape(1, 8, 8, 1)
    expected = model.predict(pixels, verbose=0)[0]

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(site)))
    server.done, server.result = threading.Event(), None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    browser = subprocess.Popen(
        [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"http://127.0.0.1:{server.server_address[1]}/index.html",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert server.done.wait(timeout=180), "the page never posted its answer"
    finally:
        browser.kill()
        browser.wait()
        server.shutdown()
    result = server.result
    assert "error" not in result, result.get("error")
    assert result["pixels"] == pixels.reshape(-1).tolist()  # the browser's PNG decoder gives the same pixels
    np.testing.assert_allclose(result["bytes"]["scores"], expected, atol=1e-4)
    assert result["blob"] == result["bytes"]
    assert result["bytes"]["label"] == "abc"[int(expected.argmax())]
    assert result["tokens"] == ["σίσυφος", "x"]  # final sigma, as Python's str.lower()
