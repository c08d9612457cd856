"""Train the MNIST classifier of `distgan evaluate` and write its weights as package data.

    python -m distgan.evaluation.train_classifier [--out PATH] [--epochs N] [--seed S]

It trains on 4,000 of the 5,000 embedded digits (with random shifts of up
to 2 pixels), measures the accuracy on the other 1,000, and stores the
weights as float16 safetensors with that accuracy in the file's metadata.
The held-out digits are the last HELDOUT of a permutation drawn from the
seed, so the split is the same on every machine.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from distgan.augment import translate
from distgan.data.mnist import load_mnist
from distgan.data.sources import pixels_to_float
from distgan.evaluation.classifier import DigitClassifier, load_classifier, weights_path

HELDOUT = 1000
BATCH_SIZE = 64
LEARNING_RATE = 1e-3
MAX_SHIFT = 2  # pixels of random translation during training


def accuracy(classifier: DigitClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Return the fraction of `images` [N, 1, 28, 28] that the classifier labels correctly."""
    classifier.eval()
    with torch.no_grad():
        predictions = torch.cat([classifier(part)[1].argmax(1) for part in images.split(500)])
    return float((predictions == labels).float().mean())


def train(epochs: int, seed: int) -> tuple[DigitClassifier, dict[str, float | int]]:
    """Train a classifier on the embedded digits; return it and its training record."""
    pixels, labels = load_mnist()
    images, labels = pixels_to_float(torch.from_numpy(pixels)), torch.from_numpy(labels)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(images), generator=generator)
    train_rows, heldout_rows = order[:-HELDOUT], order[-HELDOUT:]

    torch.manual_seed(seed)
    classifier = DigitClassifier()
    optimizer = torch.optim.Adam(classifier.parameters(), lr=LEARNING_RATE)
    for epoch in range(epochs):
        classifier.train()
        for rows in train_rows[torch.randperm(len(train_rows), generator=generator)].split(BATCH_SIZE):
            shift = torch.randint(-MAX_SHIFT, MAX_SHIFT + 1, (len(rows), 2), generator=generator)
            batch = translate(images[rows], shift, MAX_SHIFT)
            loss = F.cross_entropy(classifier(batch)[1], labels[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        print(f"epoch {epoch + 1}/{epochs}: held-out accuracy "
              f"{accuracy(classifier, images[heldout_rows], labels[heldout_rows]):.4f}")
    record = {"train": len(train_rows), "heldout": HELDOUT, "epochs": epochs, "seed": seed}
    return classifier, record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=weights_path(), help="safetensors file to write")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    classifier, record = train(args.epochs, args.seed)
    state = {name: tensor.detach().half().contiguous() for name, tensor in classifier.state_dict().items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, args.out)
    # The accuracy recorded is that of the stored float16 weights, read back.
    reloaded, _ = load_classifier(args.out)
    pixels, labels = load_mnist()
    order = torch.randperm(len(pixels), generator=torch.Generator().manual_seed(args.seed))
    heldout = order[-HELDOUT:]
    record["heldout_accuracy"] = accuracy(reloaded, pixels_to_float(torch.from_numpy(pixels))[heldout],
                                          torch.from_numpy(labels)[heldout])
    save_file(state, args.out, metadata={"distgan.classifier": json.dumps(record)})
    print(f"wrote {args.out}: held-out accuracy {record['heldout_accuracy']:.4f} on {HELDOUT} digits")


if __name__ == "__main__":
    main()
