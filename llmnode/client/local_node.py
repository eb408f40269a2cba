"""Finding the local node: its control address and token, from its data dir (reads files).

The data dir is resolved by :func:`llmnode.config.resolve_data_dir`, the one place that decides
it (argument, ``LLMNODE_DATA_DIR``, ``XDG_DATA_HOME``, ``~/.local/share``), so the SDK and the CLI
find the node ``llmnode start`` runs.
"""

from __future__ import annotations

import os
from pathlib import Path

from llmnode.config import resolve_data_dir
from llmnode.errors import NotRunning


def find_control(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    address: str | None = None,
    token: str | bytes | None = None,
) -> tuple[str, bytes]:
    """The control address and token of the node owning ``data_dir``; explicit values win.

    Raises :class:`NotRunning` when the node has not written them (it is not running there).
    """
    directory = resolve_data_dir(data_dir)
    if address is None:
        address_file = directory / "control.address"
        try:
            address = address_file.read_text().strip()
        except FileNotFoundError:
            raise NotRunning(
                f"no llmnode node is running (looked for {address_file}); "
                "start one with `llmnode start`"
            ) from None
        except OSError as error:
            raise NotRunning(f"cannot read {address_file}: {error.strerror}") from error
        if address.startswith("ipc://") and not Path(address[len("ipc://") :]).exists():
            raise NotRunning(
                f"no llmnode node is running (looked for {address[len('ipc://') :]}); "
                "start one with `llmnode start`"
            )
    if token is None:
        token_file = directory / "control.token"
        try:
            token = token_file.read_text().strip()
        except FileNotFoundError:
            raise NotRunning(
                f"no llmnode node is running (looked for {token_file}); "
                "start one with `llmnode start`"
            ) from None
        except PermissionError as error:
            raise NotRunning(f"cannot read {token_file}: permission denied") from error
    token_bytes = token.encode() if isinstance(token, str) else token
    return address, token_bytes
