import json

from tumorgen.cli import main


def test_env_text(capsys):
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    for key in ("versions", "torch", "monai", "diffusers", "accelerate", "numpy", "capability", "bf16",
                "precision   auto on CPU ->", "lpips_alex"):
        assert key in out, key


def test_env_json(capsys):
    assert main(["env", "--json"]) == 0
    env = json.loads(capsys.readouterr().out)
    assert set(env["versions"]) >= {"tumorgen", "torch", "monai", "diffusers", "accelerate", "numpy"}
    assert env["versions"]["torch"]
    cpu = env["cpu"]
    assert cpu["capability"] and isinstance(cpu["bf16_native"], bool) and cpu["torch_threads"] >= 1
    assert cpu["auto_precision"] == ("bf16" if cpu["bf16_native"] else "fp32")
    assert isinstance(env["cuda"]["available"], bool)
    assert env["offline_weights"]["files"]["lpips_alex"]["path"].endswith("alexnet-owt-7be5be79.pth")
