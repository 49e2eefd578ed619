"""Keep only a checkpoint's model weights, for a file to publish or commit (docs/*.ckpt).

    python experiments/publish_checkpoint.py CONFIG SRC DST

The model is built from CONFIG as experiments/run.py builds it, and DST gets exactly its weights from SRC (with the
model's hparams and the versions), written as msforge writes every checkpoint (atomically, with a crc). Left out:
the optimizer and loss-scale state and the callbacks' state, which holds the paths of the machine that trained. DST
tests and predicts like SRC (``run.py CONFIG --stage test --ckpt DST``) but cannot resume a fit.
"""
import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def _run_module():
    spec = importlib.util.spec_from_file_location("msforge_experiments_run", os.path.join(HERE, "run.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) != 3 or argv[0].startswith("-"):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    config_name, src, dst = argv
    run = _run_module()
    C = run.C
    from msforge import checkpoint as ckpt_io  # msforge first: it caps oneDNN's ISA before MindSpore loads
    from msforge.trainer import _version

    import mindspore as ms

    try:
        config_path = C.find_config(config_name, [os.getcwd(), HERE])
        exp, _ = run.check_config(config_path, C.load_yaml(config_path))
        model = C.instantiate(exp.model)
        params, state = ckpt_io.load(src)
        targets = ckpt_io.named_params(model)
        ckpt_io.check_match(src, params, targets)
        ckpt_io.assign(targets, params)
        kept = {"msforge_version": _version("msforge"), "mindspore_version": ms.__version__, "weights_only": True,
                "hparams": state.get("hparams", dict(getattr(model, "hparams", {}) or {})),
                "global_step": state.get("global_step"), "epoch": state.get("epoch")}
        ckpt_io.save(dst, targets, kept)
    except (C.ConfigError, ckpt_io.CheckpointError) as err:
        print(f"error: {C.one_line(err)}", file=sys.stderr)
        return 2
    print(f"{dst}: {len(targets)} weights of {type(model).__name__} from {src} (step {kept['global_step']}); "
          f"{len(params) - len(targets)} other entries left out")
    return 0


if __name__ == "__main__":
    sys.exit(main())
