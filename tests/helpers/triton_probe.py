"""Talks to a gateway with NVIDIA's ``tritonclient`` only, and prints what it saw as JSON.

Run as a script in a child process (``tests/integration/test_triton_client.py``):
tritonclient brings gevent, which has no place in the test process, and the child
imports nothing of inferq, so everything it reports went through HTTP and the
client's own encoders and decoders. Output arrays are printed as lists of the exact
float values the client decoded.

    python tests/helpers/triton_probe.py --url 127.0.0.1:8000 --key K --input x.npy
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
from typing import Any

import numpy as np
import tritonclient.http as httpclient
import tritonclient.http.aio as aioclient
from tritonclient.utils import InferenceServerException

MODEL, VERSION, INPUT, OUTPUT = "digits", "fp32", "image", "probs"


def request(x: np.ndarray, binary_in: bool, binary_out: bool, datatype: str = "FP32") -> dict[str, Any]:
    inp = httpclient.InferInput(INPUT, list(x.shape), datatype)
    inp.set_data_from_numpy(x, binary_data=binary_in)
    return {"inputs": [inp], "outputs": [httpclient.InferRequestedOutput(OUTPUT, binary_data=binary_out)]}


def error_of(call: Any) -> dict[str, Any]:
    """The ``InferenceServerException`` a call raises, as status and message."""
    try:
        call()
    except InferenceServerException as exc:
        return {"status": exc.status(), "message": exc.message()}
    return {"status": None, "message": "no exception raised"}


async def aio_infer(url: str, headers: dict[str, str], x: np.ndarray) -> list[Any]:
    """The same request through tritonclient's other HTTP stack (aiohttp, not gevent)."""
    async with aioclient.InferenceServerClient(url=url) as client:
        inp = aioclient.InferInput(INPUT, list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        out = [aioclient.InferRequestedOutput(OUTPUT, binary_data=True)]
        res = await client.infer(MODEL, [inp], model_version=VERSION, outputs=out, headers=headers)
        probs: list[Any] = res.as_numpy(OUTPUT).tolist()
        return probs


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True, help="host:port")
    p.add_argument("--key", required=True)
    p.add_argument("--input", required=True, help=".npy with a batch of digits images")
    args = p.parse_args()
    x = np.load(args.input)
    key = args.key

    def auth() -> dict[str, str]:
        # A new dict per call: tritonclient writes Inference-Header-Content-Length into the
        # headers it is given, and a stale one would cut the next JSON-only request short.
        return {"Authorization": f"Bearer {key}"}

    client = httpclient.InferenceServerClient(url=args.url, concurrency=4)
    out: dict[str, Any] = {
        "live": client.is_server_live(headers=auth()),
        "ready": client.is_server_ready(headers=auth()),
        "model_ready": client.is_model_ready(MODEL, VERSION, headers=auth()),
        "unserved_ready": client.is_model_ready(MODEL, "fp16", headers=auth()),
        "server": client.get_server_metadata(headers=auth()),
        "metadata": client.get_model_metadata(MODEL, VERSION, headers=auth()),
        "default_metadata": client.get_model_metadata(MODEL, headers=auth()),
        "infer": {},
    }
    for binary_in, binary_out in itertools.product((False, True), repeat=2):
        res = client.infer(
            MODEL,
            model_version=VERSION,
            request_id=f"in{binary_in:d}-out{binary_out:d}",
            headers=auth(),
            **request(x, binary_in, binary_out),
        )
        probs = res.as_numpy(OUTPUT)
        head = {k: v for k, v in res.get_response().items() if k != "outputs"}
        head["outputs"] = [{k: v for k, v in o.items() if k != "data"} for o in res.get_response()["outputs"]]
        out["infer"][f"{binary_in:d}{binary_out:d}"] = {
            "probs": probs.tolist(),
            "dtype": str(probs.dtype),
            "response": head,
        }
    # No outputs named: tritonclient then asks for every output in binary.
    inp = httpclient.InferInput(INPUT, list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    out["all_outputs"] = (
        client.infer(MODEL, [inp], model_version=VERSION, headers=auth()).as_numpy(OUTPUT).tolist()
    )
    # Concurrent requests on the client's connection pool (gevent greenlets).
    pending = [
        client.async_infer(MODEL, model_version=VERSION, headers=auth(), **request(x[i : i + 1], True, True))
        for i in range(len(x))
    ]
    out["async_infer"] = [p.get_result().as_numpy(OUTPUT)[0].tolist() for p in pending]
    out["aio_infer"] = asyncio.run(aio_infer(args.url, auth(), x))
    # Triton's schedule-policy priority: tritonclient sends it as an integer (1 the highest).
    out["priority"] = (
        client.infer(MODEL, model_version=VERSION, headers=auth(), priority=1, **request(x, True, True))
        .as_numpy(OUTPUT)
        .tolist()
    )
    # Asking for a gzip answer is allowed (the gateway answers uncompressed; the client copes).
    out["gzip_response"] = (
        client.infer(
            MODEL,
            model_version=VERSION,
            headers=auth(),
            response_compression_algorithm="gzip",
            **request(x, True, True),
        )
        .as_numpy(OUTPUT)
        .tolist()
    )

    wrong_shape = np.zeros((1, 28, 28, 3), np.float32)
    out["errors"] = {
        "wrong_shape": error_of(
            lambda: client.infer(
                MODEL, model_version=VERSION, headers=auth(), **request(wrong_shape, True, True)
            )
        ),
        "wrong_datatype": error_of(
            lambda: client.infer(
                MODEL,
                model_version=VERSION,
                headers=auth(),
                **request(x.astype(np.float64), False, False, "FP64"),
            )
        ),
        "unknown_model": error_of(lambda: client.infer("nope", headers=auth(), **request(x, True, True))),
        "gzip_request": error_of(
            lambda: client.infer(
                MODEL,
                model_version=VERSION,
                headers=auth(),
                request_compression_algorithm="gzip",
                **request(x, True, True),
            )
        ),
        "priority_out_of_range": error_of(
            lambda: client.infer(
                MODEL, model_version=VERSION, headers=auth(), priority=7, **request(x, True, True)
            )
        ),
        "no_key": error_of(lambda: client.get_model_metadata(MODEL, VERSION)),
    }
    client.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
