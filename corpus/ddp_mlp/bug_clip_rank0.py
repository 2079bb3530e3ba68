"""ddp_mlp bug: rank 0 logs the gradient norm with clip_grad_norm_ (which also clips) inside
`if rank == 0:`, so rank 0 steps on clipped gradients and the other ranks do not."""
from common import run


def main(argv=None):
    return run(argv, clip_on_rank0_only=True)


if __name__ == "__main__":
    main()
