"""Semi-hard mining at B=4096 must not build a B x B x B tensor (that would be 68 GB as bool)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_semihard_b4096_peak_memory_is_quadratic():
    code = textwrap.dedent(
        """
        import resource, torch
        from facenet_pl.mining import SemiHardMiner
        torch.manual_seed(0)
        b, k = 4096, 8
        emb = torch.nn.functional.normalize(torch.randn(b, 128), dim=1)
        labels = torch.arange(b // k).repeat_interleave(k)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        a, p, n = SemiHardMiner()(emb, labels)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert a.numel() == b * (k - 1), a.numel()
        assert bool((labels[n] != labels[a]).all())
        print((after - before) / 1024)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    peak_mb = float(out.stdout.strip().splitlines()[-1])
    # A handful of B x B float/int64 tensors is ~1 GB; a B^3 tensor would be >= 68 GB.
    assert peak_mb < 2500, f"semi-hard mining at B=4096 grew the peak RSS by {peak_mb:.0f} MB"
