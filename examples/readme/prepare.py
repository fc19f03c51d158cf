"""Split the raw churn records into training and test sets (the README's `prepare` stage)."""
import argparse
import csv
import glob
import os

parser = argparse.ArgumentParser()
parser.add_argument("--split", type=float, required=True, help="the fraction held out for testing")
args = parser.parse_args()

rows = []
for path in sorted(glob.glob("data/raw/*.csv")):
    with open(path, newline="") as f:
        rows.extend(csv.DictReader(f))
cut = int(len(rows) * (1 - args.split))
os.makedirs("data/prepared", exist_ok=True)
for name, part in (("train", rows[:cut]), ("test", rows[cut:])):
    with open(f"data/prepared/{name}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["age", "tenure", "plan", "churned"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(part)
print(f"prepared {cut} training and {len(rows) - cut} test rows")
