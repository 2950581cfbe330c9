"""One inference call with KServe's Python client, in a process of its own: KServe's and Triton's
generated gRPC modules both register `inference.*` in protobuf's default pool, which refuses the
second, so the KServe tests (test_kserve_client.py) run the client here while tritonclient runs
in pytest's process.

    python3 kserve_call.py rest|grpc URL MODEL < {"inputs": [{name, datatype, shape, dtype, data}]}

Prints {"model_name", "outputs": {name: data as a nested list}} (BYTES elements as text). With
`rest`, fails unless the client's defaults sent binary tensors.
"""
import asyncio
import json
import sys

import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest
from kserve.inference_client import RESTConfig


def main():
    protocol, url, model = sys.argv[1:4]
    inputs = []
    for spec in json.loads(sys.stdin.read())["inputs"]:
        if spec["datatype"] == "BYTES":
            data = np.array([v.encode() for v in spec["data"]], dtype=np.object_)
        else:
            data = np.array(spec["data"], dtype=spec["dtype"])
        data = data.reshape(spec["shape"])
        i = InferInput(spec["name"], list(data.shape), spec["datatype"])
        i.set_data_from_numpy(data)  # the client's default: binary data
        inputs.append(i)
    request = InferRequest(model, inputs)

    async def call():
        if protocol == "rest":
            # What the defaults produce: binary tensors after a JSON header of this length.
            assert request.to_rest()[1], "the client sent JSON, not binary tensors"
            client = InferenceRESTClient(RESTConfig(protocol="v2"))
            try:
                return await client.infer(url, request, model_name=model)
            finally:
                await client.close()
        client = InferenceGRPCClient(url)
        try:
            return await client.infer(request)
        finally:
            await client.close()

    response = asyncio.run(call())

    def plain(array):
        if array.dtype == np.object_:
            return [v.decode() if isinstance(v, bytes) else v for v in array.reshape(-1)]
        return array.tolist()

    print(json.dumps({"model_name": response.model_name,
                      "outputs": {o.name: plain(o.as_numpy()) for o in response.outputs}}))


if __name__ == "__main__":
    main()
