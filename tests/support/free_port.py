"""free_port(): a TCP port on 127.0.0.1 that nothing listens on now and that this process has
not handed out before.

The tests that start several servers (tests/cli/test_disaggregated.py, tests/deploy/
check_deploy.py, tests/cli/gpu_split_check.py) ask for one port per node, per job socket and
per HTTP side. bind(0) alone may give back a port it released a moment earlier, and a CI run
once got the denoiser's port back as the head's HTTP port ('Address already in use'), so the
ports handed out are remembered. (Another process can still take a port between this call and
the server's bind; that race is the kernel's, and rare.)
"""
import socket

_given: set = set()


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _given:
            _given.add(port)
            return port
