"""Data sharded over devices on the example axis give the numbers of one device.

JAX fixes its device count when it starts its backend, so the four devices
(``--xla_force_host_platform_device_count=4``, simulated CPU devices) live in a
subprocess; the script below fits and cross-validates wells (N = 3020, 755 rows per
device) once with the data on one device and once sharded by
``NamedSharding(Mesh(devices, ("data",)), PartitionSpec("data"))``, in float64.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

SCRIPT = textwrap.dedent(
    """
    import json

    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    import numpyro
    import numpyro.distributions as dist
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    import numpyro_mpe
    from numpyro_mpe import optim
    from numpyro_mpe.datasets import load_wells
    from numpyro_mpe.core.rows import pad_examples

    wells = load_wells()
    X = np.stack([np.ones(len(wells.switch)), wells.dist / 100, wells.arsenic], axis=1)
    y = np.asarray(wells.switch, float)


    def model(X, y=None):
        beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
        with numpyro.plate("data", X.shape[0]):
            numpyro.sample("y", dist.Bernoulli(logits=X @ beta), obs=y)


    mesh = Mesh(np.array(jax.devices()), ("data",))
    by_rows = NamedSharding(mesh, PartitionSpec("data"))
    placements = {
        "one": (jax.device_put(X, jax.devices()[0]), jax.device_put(y, jax.devices()[0])),
        "sharded": (jax.device_put(X, by_rows), jax.device_put(y, by_rows)),
    }
    fits = {
        "newton": (optim.newton(), "dense", {}),
        "online_newton": (optim.online_newton(), "dense", {"batch_size": 256}),
        "iblr": (optim.iblr(0.1), "diag", {"batch_size": 256}),
    }
    steps = {"newton": 20, "online_newton": 40, "iblr": 200}
    out = {"devices": len(jax.devices())}
    for place, (Xp, yp) in placements.items():
        numbers = {}
        for name, (optimizer, covariance, options) in fits.items():
            guide = numpyro_mpe.AutoGaussian(model, covariance=covariance)
            result = numpyro_mpe.BLR(model, guide, optimizer).run(
                jax.random.PRNGKey(0), steps[name], Xp, yp, progress_bar=False, **options
            )
            numbers[name] = [np.asarray(v).ravel().tolist() for v in result.params.values()]
            if name == "newton":
                out[place + "_latents_replicated"] = all(
                    v.sharding.is_fully_replicated for v in result.params.values()
                )
                newton = (guide, result.params)
        guide, params = newton
        numbers["loo"] = numpyro_mpe.loo(model, guide, params, Xp, yp).elpd_i.values.tolist()
        removed = numpyro_mpe.perturb(model, guide, params, jnp.arange(10), Xp, yp)
        numbers["perturb"] = [np.asarray(v).ravel().tolist() for v in removed.values()]
        report = numpyro_mpe.sensitivity(model, guide, params, Xp, yp)
        numbers["sensitivity"] = [
            np.asarray(v).ravel().tolist()
            for v in report
            if isinstance(v, (np.ndarray, jax.Array)) and np.asarray(v).dtype.kind == "f"
        ]
        padded = pad_examples(model, None, (Xp, yp), {})
        out[place + "_padded_devices"] = [len(a.sharding.device_set) for a in padded.arrays]
        out[place + "_padded_rows"] = padded.num_examples, padded.arrays[0].shape[0]
        out[place] = numbers
    bad = np.array(X)
    bad[2001, 1] = np.nan
    try:
        numpyro_mpe.loo(model, guide, params, jax.device_put(bad, by_rows), yp)
    except numpyro_mpe.ModelError as error:
        out["error"] = str(error)
    print("RESULT" + json.dumps(out))
    """
)


@pytest.mark.slow
def test_four_devices_give_the_numbers_of_one():
    """Newton (full batch), online Newton and diagonal iBLR (minibatches of 256), MPE-LOO,
    ``perturb`` and ``sensitivity``: sharded data give the one-device numbers to 1e-10
    (relative), the latents stay replicated, and the examples ``loo`` pads (3020 to 4096)
    stay split over the four devices."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = " ".join(
        filter(None, [env.get("XLA_FLAGS"), "--xla_force_host_platform_device_count=4"])
    )
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT"))
    out = json.loads(line.removeprefix("RESULT"))
    assert out["devices"] == 4
    assert out["one_latents_replicated"] and out["sharded_latents_replicated"]
    assert out["one_padded_devices"] == [1, 1]
    assert out["sharded_padded_devices"] == [4, 4]
    assert out["sharded_padded_rows"] == [3020, 4096]
    # A NaN in sharded data is found on the devices and named, as on the host.
    assert out["error"].startswith("positional argument 0 contains nan at index (2001, 1)")
    one, sharded = out["one"], out["sharded"]
    assert one.keys() == sharded.keys()
    for name in one:
        assert len(one[name]) == len(sharded[name]) > 0, name
        for expected, actual in zip(one[name], sharded[name], strict=True):
            expected, actual = np.asarray(expected), np.asarray(actual)
            assert expected.shape == actual.shape and expected.size > 0, name
            np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-12, err_msg=name)
