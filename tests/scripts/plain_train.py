"""A plain seeded training script used by the tracer tests (argparse, __main__, sibling import)."""
import argparse
import sys

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset

from plain_model import make_model  # sibling-module import


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--functional", action="store_true")
    ap.add_argument("--exit-zero", action="store_true")
    ap.add_argument("--crash-at", type=int, default=-1)
    ap.add_argument("--overlap", action="store_true")
    # Bug switches for the quality tests (each a known silent bug):
    ap.add_argument("--freeze", action="store_true")        # features frozen
    ap.add_argument("--late-head", action="store_true")     # head replaced after the optimizer
    ap.add_argument("--no-zero-grad", action="store_true")  # gradients accumulate forever
    ap.add_argument("--eval-scale", type=float, default=1.0)  # eval data scaled differently
    ap.add_argument("--upsample", type=int, default=1)      # inputs resized larger
    ap.add_argument("--no-eval-mode", action="store_true")  # evaluation in training mode
    ap.add_argument("--classes", type=int, default=4)       # output width
    ap.add_argument("--lr-scale", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--detach-features", action="store_true")  # features get no gradient
    ap.add_argument("--train-in-eval-mode", action="store_true")  # model.eval() left on while training
    ap.add_argument("--lr-step-per-batch", action="store_true")  # an epoch scheduler stepped per batch
    ap.add_argument("--dead-units", action="store_true")    # a bias that keeps the ReLU from firing
    ap.add_argument("--scale-all", type=float, default=1.0)  # train and eval data both rescaled
    ap.add_argument("--zero-grad-after-forward", action="store_true")  # valid: zeroed before backward
    ap.add_argument("--sorted", action="store_true")        # training data ordered by class, not shuffled
    ap.add_argument("--compile", default=None, metavar="BACKEND")  # train torch.compile(model, backend=...)
    args = ap.parse_args()

    torch.manual_seed(0)
    x = torch.randn(512, 3, 8, 8)
    y = (x.mean(dim=(1, 2, 3)) > 0).long() + 2 * (x[:, 0].mean(dim=(1, 2)) > 0).long()
    x = x * args.scale_all
    base = TensorDataset(x, y)
    train_idx = list(range(0, 384))
    if args.sorted:
        train_idx = sorted(train_idx, key=lambda i: int(y[i]))
    test_idx = list(range(256, 512)) if args.overlap else list(range(384, 512))
    test_base = base if args.eval_scale == 1.0 else TensorDataset(x * args.eval_scale, y)
    train = DataLoader(Subset(base, train_idx), batch_size=args.batch, shuffle=not args.sorted)
    test = DataLoader(Subset(test_base, test_idx), batch_size=64)
    model = make_model(args.classes, detach_features=args.detach_features)
    if args.freeze:
        for p in model.features.parameters():
            p.requires_grad = False
    opt = torch.optim.SGD([
        {"params": model.features.parameters(), "lr": 0.05 * args.lr_scale},
        {"params": model.head.parameters(), "lr": 0.1 * args.lr_scale},
    ], momentum=0.9)
    if args.late_head:
        model.head = nn.Linear(8, args.classes)
    if args.dead_units:
        with torch.no_grad():
            model.features[1].bias.fill_(-10.0)  # after BatchNorm, so nothing renormalises it
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.1) if args.lr_step_per_batch else None
    loss_fn = nn.CrossEntropyLoss()
    # the compiled wrapper is called; the optimizer holds the parameters of the model it compiles
    net = torch.compile(model, backend=args.compile) if args.compile else model
    step = 0
    if args.train_in_eval_mode:
        model.eval()
    for epoch in range(args.epochs):
        if not args.train_in_eval_mode:
            model.train()
        for xb, yb in train:
            if not args.no_zero_grad and not args.zero_grad_after_forward:
                opt.zero_grad()
            if args.upsample > 1:
                xb = F.interpolate(xb, scale_factor=args.upsample)
            out = net(xb)
            if args.zero_grad_after_forward:
                opt.zero_grad()
            loss = F.cross_entropy(out, yb) if args.functional else loss_fn(out, yb)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            step += 1
            if step == args.crash_at:
                raise RuntimeError("boom at step %d" % step)
        if not args.no_eval_mode:
            model.eval()
        correct = 0
        with torch.no_grad():
            for xb, yb in test:
                if args.upsample > 1:
                    xb = F.interpolate(xb, scale_factor=args.upsample)
                correct += (net(xb).argmax(1) == yb).sum().item()
        print(f"epoch {epoch} acc {correct / len(test.dataset):.3f}")
        if args.exit_zero and epoch == 0:
            if args.out:
                torch.save(model.state_dict(), args.out)
            sys.exit(0)
    if args.out:
        torch.save(model.state_dict(), args.out)


if __name__ == "__main__":
    main()
