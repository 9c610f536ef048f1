"""FDS from zero against a strong hand-tuned schedule, under the same retraining budget.

    python experiments/fds_vs_hand_tuned.py --preset digits
    python experiments/fds_vs_hand_tuned.py --preset fashion_mnist
"""
import argparse
import json
import time

from fds_tune import FDSLearner, Problem, fds_config
from experiments.handtuned import hand_tuned


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="digits")
    p.add_argument("--lrs", type=float, nargs="+", default=[0.01, 0.03, 0.1, 0.3])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-hand-tuned", action="store_true", help="run FDS only")
    args = p.parse_args(argv)
    cfg = fds_config({"preset": args.preset, "seed": args.seed})
    problem = Problem(cfg.problem)
    t0 = time.perf_counter()
    learner = FDSLearner(cfg, problem)
    while not learner.done:
        r = learner.step()
        print(f"outer {r['outer_step']:2d}  val_acc {r['val_acc']:.4f}  schedule {json.dumps({k: [round(x, 4) for x in v] for k, v in r['schedule_used'].items()})}", flush=True)
    fds = learner.retrain()
    t_fds = time.perf_counter() - t0
    print(f"\n{args.preset}, seed {args.seed}, retraining budget {cfg.retrain_epochs} epochs")
    print(f"FDS from zero:  test acc {fds['retrain_test_acc']:.4f}  ({t_fds:.0f} s)  learned {learner.schedule}")
    print(f"  retrained {json.dumps(fds['retrain_schedule'])} (attempt {fds['retrain_attempts']}, failed: {fds['retrain_diverged']})")
    if args.skip_hand_tuned:
        return
    t0 = time.perf_counter()
    ref = hand_tuned(problem, cfg.retrain_epochs, args.lrs, grad_clamp=cfg.grad_clamp)
    t_ref = time.perf_counter() - t0
    print(f"hand-tuned (SGD momentum {ref['momentum']}, cosine, peak lr {ref['best_lr']} chosen on val from {args.lrs}, "
          f"weight decay {ref['weight_decay']}):  test acc {ref['test_acc']:.4f}  ({t_ref:.0f} s)")
    print("grid:", ref["grid"])


if __name__ == "__main__":
    main()
