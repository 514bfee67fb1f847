"""Seeded client partitioners and the padded client-data layout.

Every partitioner maps labels ``int[N]`` to a list of ``C`` index arrays (one per
client, disjoint, covering at most all examples); :func:`to_client_data` pads
them into :class:`ClientData` (``x: [C, M, ...]``, ``y: [C, M]``,
``count: [C]``) so that local training is one function vmapped over clients.

References:
  McMahan, B. et al.: Communication-efficient learning of deep networks from
  decentralized data. AISTATS (2017) -- shards.
  Hsu, T.-M. H., Qi, H., Brown, M.: Measuring the effects of non-identical data
  distribution for federated visual classification (2019) -- Dirichlet.
  Romoa (Mao et al., ESORICS 2021), Table 2 -- one label per client.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from robustfl_jax.data._types import ClientData

PARTITIONS = ("iid", "dirichlet", "shards", "one_label")


def _check(labels, num_clients):
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f"labels must be 1-D; got shape {labels.shape}.")
  if num_clients < 1:
    raise ValueError(f"num_clients must be >= 1; got {num_clients}.")
  if num_clients > len(labels):
    raise ValueError(
        f"num_clients={num_clients} exceeds the {len(labels)} training "
        "examples; every client needs at least one example.")
  return labels


def iid(labels: Sequence[int], num_clients: int, seed: int = 0
        ) -> list[np.ndarray]:
  """Shuffles and splits the examples into ``num_clients`` near-equal parts."""
  labels = _check(labels, num_clients)
  perm = np.random.default_rng(seed).permutation(len(labels))
  return [np.sort(p) for p in np.array_split(perm, num_clients)]


def dirichlet(labels: Sequence[int], num_clients: int, alpha: float,
              seed: int = 0) -> list[np.ndarray]:
  """Label-skewed split: class ``k`` is spread over clients by ``Dir(alpha)``.

  Small ``alpha`` (0.1) gives each client few classes; large ``alpha`` (100)
  approaches IID. A client left empty receives one example from the largest
  client so that ``count >= 1`` everywhere.

  Raises:
    ValueError: if ``alpha <= 0``.
  """
  labels = _check(labels, num_clients)
  if not alpha > 0:
    raise ValueError(f"dirichlet needs alpha > 0 (data.alpha); got {alpha}.")
  rng = np.random.default_rng(seed)
  parts: list[list[int]] = [[] for _ in range(num_clients)]
  for label in np.unique(labels):
    idx = np.flatnonzero(labels == label)
    idx = idx[rng.permutation(len(idx))]
    props = rng.dirichlet(np.full(num_clients, float(alpha)))
    cuts = (np.cumsum(props)[:-1] * len(idx)).astype(int)
    for client, chunk in enumerate(np.split(idx, cuts)):
      parts[client].extend(chunk.tolist())
  for client in range(num_clients):
    if not parts[client]:
      donor = max(range(num_clients), key=lambda c: len(parts[c]))
      parts[client].append(parts[donor].pop())
  return [np.sort(np.asarray(p, np.int64)) for p in parts]


def shards(labels: Sequence[int], num_clients: int, classes_per_client: int = 2,
           seed: int = 0) -> list[np.ndarray]:
  """Pathological non-IID: sort by label, cut ``C * k`` shards, deal ``k`` each.

  Each client sees at most ``classes_per_client`` classes (more only where a
  shard straddles a class boundary).

  Raises:
    ValueError: if there are fewer examples than shards.
  """
  labels = _check(labels, num_clients)
  if classes_per_client < 1:
    raise ValueError("shards needs classes_per_client >= 1; got "
                     f"{classes_per_client}.")
  num_shards = num_clients * classes_per_client
  if num_shards > len(labels):
    raise ValueError(f"shards: {num_shards} shards for {len(labels)} examples.")
  rng = np.random.default_rng(seed)
  # Stable sort with a random tie-break so that shards are random within class.
  order = np.lexsort((rng.random(len(labels)), labels))
  pieces = np.array_split(order, num_shards)
  deal = rng.permutation(num_shards).reshape(num_clients, classes_per_client)
  return [np.sort(np.concatenate([pieces[s] for s in row])) for row in deal]


def one_label(labels: Sequence[int], num_clients: int, seed: int = 0
              ) -> list[np.ndarray]:
  """Each client holds a single label (Romoa's extreme non-IID, Table 2).

  Client ``c`` gets label ``classes[c % K]``; clients sharing a label split its
  examples evenly.

  Raises:
    ValueError: if there are fewer clients than classes (a class would be lost).
  """
  labels = _check(labels, num_clients)
  classes = np.unique(labels)
  if num_clients < len(classes):
    raise ValueError(
        f"one_label needs num_clients >= number of classes ({len(classes)}); "
        f"got num_clients={num_clients}.")
  rng = np.random.default_rng(seed)
  owners: dict[int, list[int]] = {}
  for client in range(num_clients):
    owners.setdefault(int(classes[client % len(classes)]), []).append(client)
  parts: list[Optional[np.ndarray]] = [None] * num_clients
  for label, clients in owners.items():
    idx = np.flatnonzero(labels == label)
    idx = idx[rng.permutation(len(idx))]
    for client, chunk in zip(clients, np.array_split(idx, len(clients))):
      parts[client] = np.sort(chunk)
  return parts  # type: ignore[return-value]


def partition(name: str, labels: Sequence[int], num_clients: int, *,
              seed: int = 0, alpha: float = 0.5, classes_per_client: int = 2
              ) -> list[np.ndarray]:
  """Dispatches to a partitioner by name (``data.partition`` in configs)."""
  if name == "iid":
    return iid(labels, num_clients, seed)
  if name == "dirichlet":
    return dirichlet(labels, num_clients, alpha, seed)
  if name == "shards":
    return shards(labels, num_clients, classes_per_client, seed)
  if name == "one_label":
    return one_label(labels, num_clients, seed)
  raise ValueError(f"unknown partition {name!r}; choose one of {PARTITIONS}.")


def to_client_data(x: np.ndarray, y: np.ndarray,
                   client_indices: Sequence[np.ndarray],
                   max_examples: Optional[int] = None) -> ClientData:
  """Gathers and pads per-client examples into :class:`ClientData`.

  Args:
    x: ``[N, ...]`` inputs.
    y: ``int[N]`` labels.
    client_indices: one index array per client.
    max_examples: padded length ``M``; defaults to the largest client. Clients
      larger than ``M`` are truncated (a warning-free, documented choice used by
      scale tests).

  Returns:
    :class:`ClientData`; padding rows are zeros with label 0.
  """
  counts = np.asarray([len(i) for i in client_indices], np.int64)
  m = int(counts.max()) if max_examples is None else int(max_examples)
  if m < 1:
    raise ValueError(f"max_examples must be >= 1; got {m}.")
  num_clients = len(client_indices)
  xs = np.zeros((num_clients, m) + tuple(x.shape[1:]), np.float32)
  ys = np.zeros((num_clients, m), np.int32)
  for c, idx in enumerate(client_indices):
    idx = np.asarray(idx)[:m]
    xs[c, :len(idx)] = x[idx]
    ys[c, :len(idx)] = y[idx]
  return ClientData(xs, ys, np.minimum(counts, m).astype(np.int32))
