"""experiments/bench_build_ahead.py: one small case runs end to end and says what the rule chooses."""
import re

import torch

from experiments import bench_build_ahead


def test_a_case_prints_the_saved_bytes_the_ratio_and_the_rules_choice(capsys):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        bench_build_ahead.main(["--case", "lenet", "8", "3", "--rounds", "1"])
        bench_build_ahead.main(["--case", "mlp", "8", "3", "--rounds", "1"])
    finally:
        torch.set_num_threads(threads)
    lines = [l for l in capsys.readouterr().out.splitlines() if " batch " in l]
    pattern = r"\s*(\S+) batch\s+8: saves\s+[\d.]+ MiB/step; in turn\s+[\d.]+ ms/step; ahead / in turn = [\d.]+ \(rounds [\d.]+\); the rule builds (ahead|in turn)"
    found = [re.fullmatch(pattern, l) for l in lines]
    assert all(found) and [(m[1], m[2]) for m in found] == [("lenet", "ahead"), ("mlp", "in turn")]
