"""Fixtures the bench tests share."""

import os
import shutil

import pytest


@pytest.fixture(scope="module")
def local_ray():
    """A Ray of the test module's own; the copies of trials Tune staged in its session folder go with it."""
    ray = pytest.importorskip("ray")
    from mrfbench.sweeps.reaper import staged_trials

    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    staged = staged_trials()
    yield ray
    ray.shutdown()
    shutil.rmtree(staged, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres_url():
    """A PostgreSQL server of the test's own: a fresh cluster in a temporary folder, on a free loopback port
    with trust login, stopped and removed afterwards. Skips, saying why, where PostgreSQL is not installed
    (`apt-get install postgresql`)."""
    import glob
    import pwd
    import shutil
    import socket
    import subprocess
    import tempfile
    from pathlib import Path

    tools = {name: shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None)
             for name in ("initdb", "pg_ctl")}
    if not all(tools.values()):
        pytest.skip("PostgreSQL is not installed here (no initdb, pg_ctl): apt-get install postgresql")
    as_user = []
    root = Path(tempfile.mkdtemp(prefix="mrfbench-postgres-"))
    if os.geteuid() == 0:  # the server refuses to run as root: it runs as the postgres account
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root)
            pytest.skip("running as root and there is no postgres account to run the server as")
        os.chown(root, account.pw_uid, account.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = root / "data"
    subprocess.run([*as_user, tools["initdb"], "-D", str(data), "-A", "trust", "-U", "mrfbench"], check=True,
                   capture_output=True)
    subprocess.run([*as_user, tools["pg_ctl"], "-D", str(data), "-l", str(root / "server.log"), "-w", "start", "-o",
                    f"-p {port} -k {root} -c listen_addresses=127.0.0.1"], check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://mrfbench@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, tools["pg_ctl"], "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
