# Cairn's Python model worker: loads one MLflow model directory with mlflow.pyfunc and answers
# batches over stdin/stdout until stdin closes.
#
# Frames, both ways: a 4-byte little-endian header length, the header (JSON), then each
# tensor's bytes in header order. A tensor is {"name", "dtype", "shape", "nbytes"}; its bytes
# are little-endian and row-major, bool one byte each, string each a 4-byte little-endian
# length and that many UTF-8 bytes. Requests hold "inputs"; answers hold "outputs", or
# "error" (the predict call failed; the worker goes on). The first frame the worker writes
# says it is ready ({"ready": true}) or why it is not ({"error": ...}, then it exits).
import json
import os
import struct
import sys
import traceback

DTYPES = {"float32": "<f4", "float64": "<f8", "int64": "<i8", "int32": "<i4", "bool": "|b1"}


def read_exact(stream, n):
    chunks = []
    while n:
        chunk = stream.read(n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def write_frame(stream, header, buffers=()):
    encoded = json.dumps(header).encode()
    stream.write(b"".join([struct.pack("<I", len(encoded)), encoded, *buffers]))
    stream.flush()


def decode(np, spec, raw):
    shape = tuple(spec["shape"])
    if spec["dtype"] == "string":
        items, at = [], 0
        while at < len(raw):
            (length,) = struct.unpack_from("<I", raw, at)
            items.append(raw[at + 4 : at + 4 + length].decode())
            at += 4 + length
        return np.array(items, dtype=object).reshape(shape)
    return np.frombuffer(raw, dtype=DTYPES[spec["dtype"]]).reshape(shape)


def encode(np, name, value):
    array = np.asarray(value)
    kind = array.dtype.kind
    if kind == "f":
        dtype = "float32" if array.dtype.itemsize == 4 else "float64"
    elif kind in "iu":
        small = array.dtype.itemsize <= 4 if kind == "i" else array.dtype.itemsize < 4
        dtype = "int32" if small else "int64"
    elif kind == "b":
        dtype = "bool"
    elif kind in "OUS":
        parts = []
        for item in array.reshape(-1):
            text = item.decode() if isinstance(item, bytes) else str(item)
            data = text.encode()
            parts.append(struct.pack("<I", len(data)) + data)
        raw = b"".join(parts)
        return {"name": name, "dtype": "string", "shape": list(array.shape), "nbytes": len(raw)}, raw
    else:
        raise TypeError(f"output `{name}` has numpy dtype {array.dtype}, which Cairn cannot return")
    raw = np.ascontiguousarray(array.astype(DTYPES[dtype])).tobytes()
    return {"name": name, "dtype": dtype, "shape": list(array.shape), "nbytes": len(raw)}, raw


def outputs_of(np, pd, result):
    if isinstance(result, pd.DataFrame):
        return [(str(column), result[column].to_numpy()) for column in result.columns]
    if isinstance(result, pd.Series):
        return [("predictions", result.to_numpy())]
    if isinstance(result, dict):
        return [(str(key), np.asarray(value)) for key, value in result.items()]
    return [("predictions", np.asarray(result))]


def main():
    replies = sys.stdout.buffer
    requests = sys.stdin.buffer
    # Whatever the model prints goes to the log, never into the answers.
    sys.stdout = sys.stderr
    try:
        import numpy as np
        import pandas as pd
        import mlflow.pyfunc

        model = mlflow.pyfunc.load_model(sys.argv[1])
        schema = model.metadata.get_input_schema()
        columns = schema is not None and not schema.is_tensor_spec()
    except BaseException:
        write_frame(replies, {"error": "the model did not load: " + traceback.format_exc(limit=3)})
        sys.exit(1)
    write_frame(replies, {"ready": True, "pid": os.getpid()})
    while True:
        raw = read_exact(requests, 4)
        if raw is None:
            return
        (length,) = struct.unpack("<I", raw)
        header = json.loads(read_exact(requests, length))
        tensors = [(spec["name"], decode(np, spec, read_exact(requests, spec["nbytes"]) or b"")) for spec in header["inputs"]]
        try:
            if columns:
                data = pd.DataFrame({name: value.reshape(-1) if value.ndim > 1 else value for name, value in tensors})
            elif len(tensors) == 1:
                data = tensors[0][1]
            else:
                data = dict(tensors)
            specs, buffers = [], []
            for name, value in outputs_of(np, pd, model.predict(data)):
                spec, buffer = encode(np, name, value)
                specs.append(spec)
                buffers.append(buffer)
            write_frame(replies, {"outputs": specs}, buffers)
        except Exception as error:
            write_frame(replies, {"error": f"{type(error).__name__}: {error}"})


main()
