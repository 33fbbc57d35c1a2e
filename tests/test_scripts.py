"""Every script under benchmarks/ and scripts/ runs its --quick mode: a rename in the library breaks this test
instead of a table in the docs. Scripts are discovered, so a new one without a quick mode fails here."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VOC_MINI = (ROOT / ".." / "shared" / "voc-mini").resolve()
MISSING = "voc-mini not found"  # benchmarks/_voc.py's message when the data is absent
SPEED_UP = r"speed-up.*\d+\.\d+x"
#: the result line each quick mode prints; benchmarks default to the speed-up line, others must be listed
RESULT = {
    "benchmarks/imagenet_matcher_auc.py": r"^mean AUC over \d+ classes",
    "benchmarks/scale.py": r"^quick check: prepare on 6 generated images",
    "benchmarks/gpu_check.sh": r"^quick check: 2 CUDA params files valid",
    "scripts/ablations.py": r"^quick check: 9 study commands valid",
    "scripts/cam_init_study.py": r"^quick check: \d+ study commands valid",
    "scripts/seg_recipe_study.py": r"^quick report: seg_recipe_demo.json re-rendered",
    "scripts/exp_grid.py": r"^quick check: exp_grid builds valid commands and refuses an unknown key",
    "scripts/seg_curve.py": r"^quick check: \d+ curve jobs' params valid",
    "scripts/setup.sh": r"^setup: ready",
    "scripts/plots_offline.sh": r"index\.html$",
    "scripts/results_table.py": r"the results table is up to date$",
    "scripts/mutation.py": r"^quick: \d+/\d+ killed",
    "scripts/random_walk_study.py": r"^quick check: walk study on 4 generated scenes, \d+ cells",
}
SCRIPTS = sorted(p.relative_to(ROOT).as_posix() for d in ("benchmarks", "scripts") for p in (ROOT / d).iterdir()
                 if p.suffix in (".py", ".sh") and not p.name.startswith("_"))


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), PYTHON=sys.executable)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.mark.parametrize("script", SCRIPTS)
def test_quick_mode_runs_and_prints_its_result_line(script):
    if script == "scripts/plots_offline.sh":
        pytest.skip("plots_offline.sh needs npm's registry (vega); no quick mode yet")
    cmd = ["bash", script, "--quick"] if script.endswith(".sh") else [sys.executable, script, "--quick"]
    done = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    output = done.stdout + done.stderr
    if done.returncode != 0 and MISSING in output and not VOC_MINI.is_dir():
        pytest.skip(f"{script}: voc-mini sample not found at {VOC_MINI}")
    assert done.returncode == 0, f"{script} --quick failed:\n{output[-3000:]}"
    default = SPEED_UP if script.startswith("benchmarks/") else None
    pattern = RESULT.get(script, default)
    assert pattern is not None, f"{script}: add its quick mode's result line to RESULT in tests/test_scripts.py"
    assert any(re.search(pattern, line) for line in output.splitlines()), \
        f"{script} --quick printed no line matching {pattern!r}:\n{done.stdout[-2000:]}"
