"""Serve is down when a run reaches its serve stage: the gateway retries LoadModel once serve
is back (UNAVAILABLE is retried for every stage), and the run succeeds with its model served."""

import signal

from cookline.client import Client
from cookline.v1 import gateway_pb2
from helpers import iris_pipeline


def test_serve_down_at_the_serve_stage_is_retried(stack):
    services, env = stack
    text = iris_pipeline(
        "servecrash", train="{model: mlp, hidden_units: [16], epochs: 30, batch_size: 8, learning_rate: 0.01}"
    )
    with Client(env=env) as client:
        run = client.submit(text)
        killed = restarted = False
        for event in client.watch(run.run_id):
            if event.WhichOneof("event") != "stage":
                continue
            if not killed and event.stage.stage == gateway_pb2.STAGE_TRAIN and not event.stage.finished:
                services.stop("serve", signal.SIGKILL)  # dead before the run needs it
                killed = True
            if not restarted and "lost the serve service" in event.stage.message:
                services.start("serve")  # what a supervisor (compose, k8s) does
                restarted = True
        final = client.get_run(run.run_id)
        assert killed and restarted
        assert final.state == gateway_pb2.RUN_STATE_SUCCEEDED, final.reason
        assert final.deployed
        services.wait_healthy(timeout=180)
        assert client.predict("servecrash", [[5.1, 3.5, 1.4, 0.2]])[0]["label"] == "setosa"
