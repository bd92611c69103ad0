"""The models read their typed config (`self.hparams.lr`), never the JSON dict (`self.config["lr"]`),
so every value a model uses has been checked and has its declared type."""
import re
from pathlib import Path

MODELS = Path(__file__).resolve().parents[2] / "minigen" / "models"


def test_the_models_read_hparams_not_the_config_dict():
    dict_reads = re.compile(r"""self\.config(\[|\.get\()|=\s*self\.config\s*$|\b(c|cfg)\[["']""")
    found = [f"{path.name}:{n}: {line.strip()}" for path in sorted(MODELS.glob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1)
             if dict_reads.search(line) and not line.lstrip().startswith(("#", '"', "'"))]
    assert not found, "read self.hparams.X instead:\n" + "\n".join(found)
