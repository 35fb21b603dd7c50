"""`python -m simscale.devices`: what JAX sees here, each device's peak, and the default mesh."""
import jax

from simscale.config import mesh_config
from simscale.model.counting import device_peak_flops
from simscale.train.mesh import make_mesh


def describe() -> str:
    devices = jax.devices()
    kinds = sorted({d.device_kind for d in devices})
    peaks = {k: device_peak_flops(k) for k in kinds}
    peak_text = ", ".join(f"{k}: {p / 1e12:.0f} TFLOP/s bf16" if p
                          else f"{k}: no peak known (MFU not reported)" for k, p in peaks.items())
    mesh = make_mesh(mesh_config())
    return (f"backend {jax.default_backend()}, {jax.process_count()} host(s), {len(devices)} device(s) "
            f"({jax.local_device_count()} local)\n{peak_text}\n"
            f"default mesh {dict(mesh.shape)}")


if __name__ == "__main__":
    print(describe())
