"""Stands in for training (the README's `train` stage), with nothing but the standard library.

It writes a scikit-learn churn model exported with skl2onnx (`BASE_MODEL` below, the same as
`crates/cairn-model/tests/fixtures/churn.onnx`: three named inputs `age`, `tenure` and `plan`)
with the hyperparameters recorded in the model's `doc_string`, so each configuration is a
different model, and an accuracy metric that follows the hyperparameters. A real project trains here; `examples/quickstart/` does.
"""
import argparse
import base64
import csv
import json
import os

BASE_MODEL = base64.b64decode(
    "CAgSCHNrbDJvbm54GgYxLjIwLjAiB2FpLm9ubngoADIAOrMICjwKA2FnZQoGdGVudXJlEg5tZXJnZWRfY29sdW1ucxoGQ29u"
    "Y2F0IgZDb25jYXQqCwoEYXhpcxgBoAECOgAKNAoEcGxhbgoFcGxhbjASBnBsYW4wMRoGR2F0aGVyIgZHYXRoZXIqCwoEYXhp"
    "cxgBoAECOgAKdgoGcGxhbjAxEglwbGFuMDFvdXQaDU9uZUhvdEVuY29kZXIiDU9uZUhvdEVuY29kZXIqKQoMY2F0c19zdHJp"
    "bmdzSgViYXNpY0oKZW50ZXJwcmlzZUoDcHJvoAEIKgwKBXplcm9zGAGgAQI6CmFpLm9ubngubWwKYwoObWVyZ2VkX2NvbHVt"
    "bnMSCHZhcmlhYmxlGgZTY2FsZXIiBlNjYWxlcioVCgZvZmZzZXQ9UnhKQj3NTA1CoAEGKhQKBXNjYWxlPaqvXz09r8pCPaAB"
    "BjoKYWkub25ueC5tbAo4CglwbGFuMDFvdXQKDHNoYXBlX3RlbnNvchIJdmFyaWFibGUxGgdSZXNoYXBlIgdSZXNoYXBlOgAK"
    "SQoIdmFyaWFibGUKCXZhcmlhYmxlMRISdHJhbnNmb3JtZWRfY29sdW1uGgdDb25jYXQxIgZDb25jYXQqCwoEYXhpcxgBoAEC"
    "OgAKiAIKEnRyYW5zZm9ybWVkX2NvbHVtbhIFbGFiZWwSDXByb2JhYmlsaXRpZXMaEExpbmVhckNsYXNzaWZpZXIiEExpbmVh"
    "ckNsYXNzaWZpZXIqGQoQY2xhc3NsYWJlbHNfaW50c0AAQAGgAQcqQwoMY29lZmZpY2llbnRzPeyqiT092nowPz05Vi2/Pek/"
    "BT89dZIgPj3sqom9Pdp6ML89OVYtPz3pPwW/PXWSIL6gAQYqGQoKaW50ZXJjZXB0cz0dgv8/PR2C/7+gAQYqEgoLbXVsdGlf"
    "Y2xhc3MYAKABAiodCg5wb3N0X3RyYW5zZm9ybSIITE9HSVNUSUOgAQM6CmFpLm9ubngubWwKLgoFbGFiZWwSDG91dHB1dF9s"
    "YWJlbBoEQ2FzdCIEQ2FzdCoJCgJ0bxgHoAECOgAKXAoNcHJvYmFiaWxpdGllcxISb3V0cHV0X3Byb2JhYmlsaXR5GgZaaXBN"
    "YXAiBlppcE1hcCobChJjbGFzc2xhYmVsc19pbnQ2NHNAAEABoAEHOgphaS5vbm54Lm1sEg5PTk5YKFBpcGVsaW5lKSoOCAEQ"
    "BzoBAEIFcGxhbjAqHwgCEAc6C////////////wEDQgxzaGFwZV90ZW5zb3JaEwoDYWdlEgwKCggBEgYKAAoCCAFaFgoGdGVu"
    "dXJlEgwKCggBEgYKAAoCCAFaFAoEcGxhbhIMCgoICBIGCgAKAggBYhgKDG91dHB1dF9sYWJlbBIICgYIBxICCgBiJAoSb3V0"
    "cHV0X3Byb2JhYmlsaXR5Eg4iDAoKKggIBxIECgIIAUIECgAQD0IOCgphaS5vbm54Lm1sEAE="
)

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, required=True)
parser.add_argument("--depth", type=int, required=True)
parser.add_argument("--out", required=True)
args = parser.parse_args()

with open("data/prepared/train.csv", newline="") as f:
    rows = sum(1 for _ in csv.DictReader(f))



def varint(n):
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


# ONNX's ModelProto field 6 (doc_string), appended: protobuf keeps the last value of a field.
doc = f"trained on {rows} rows, lr={args.lr}, depth={args.depth}".encode()
model = BASE_MODEL + bytes([6 << 3 | 2]) + varint(len(doc)) + doc
os.makedirs(os.path.dirname(args.out), exist_ok=True)
with open(args.out, "wb") as f:
    f.write(model)

os.makedirs("metrics", exist_ok=True)
accuracy = round(0.88 + 0.01 * args.depth - 0.1 * args.lr, 4)
with open(f"metrics/{args.lr}.json", "w") as f:
    json.dump({"accuracy": accuracy, "train_rows": rows}, f)
print(f"{args.out}: accuracy {accuracy}")
