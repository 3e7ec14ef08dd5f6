"""facerec.index: exactness of flat, recall of HNSW/IVF, the auto choice, ids, removal, atomic persistence."""

from __future__ import annotations

import numpy as np
import pytest

from facerec.errors import GalleryError
from facerec.gallery import index as fx


def clustered(n: int, dim: int = 64, per_class: int = 5, noise: float = 0.6, seed: int = 0, n_queries: int = 0):
    """``n`` unit vectors in classes of ``per_class`` (like photos of people), plus queries of the same classes."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((max(n // per_class, 1), dim)).astype(np.float32)

    def sample(m: int) -> np.ndarray:
        x = centers[rng.integers(0, len(centers), m)] + noise * rng.standard_normal((m, dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    return (sample(n), sample(n_queries)) if n_queries else sample(n)


@pytest.fixture(scope="module")
def data():
    x, q = clustered(3000, n_queries=200)
    ids = np.arange(len(x), dtype=np.int64) * 7 + 11  # ids unrelated to positions
    return x, ids, q


def exact(x: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    sims = qn @ x.T
    order = np.argsort(-sims, axis=1)[:, :k]
    return np.take_along_axis(sims, order, 1), ids[order]


def test_flat_is_exact_and_uses_caller_ids(data):
    x, ids, q = data
    index = fx.build_index(x, ids, "flat")
    scores, got = fx.search(index, q * 3.0, 5)  # queries need not be normalised
    want_scores, want_ids = exact(x, ids, q, 5)
    np.testing.assert_array_equal(got, want_ids)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    assert fx.index_kind(index) == "flat"
    np.testing.assert_array_equal(fx.index_ids(index), np.sort(ids))


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("hnsw", {}),
        ("ivf", {}),
        ("ivf", {"quantizer": "hnsw", "encoding": "sq8", "train_size": 2000}),
        ("ivf", {"encoding": "pq", "nprobe": 32}),
    ],
)
def test_approximate_indexes_have_high_recall(data, kind, params):
    x, ids, q = data
    index = fx.build_index(x, ids, kind, **params)
    assert fx.index_kind(index) == kind
    _, got = fx.search(index, q, 1)
    _, want = exact(x, ids, q, 1)
    assert (got[:, 0] == want[:, 0]).mean() >= 0.95


def test_search_params_trade_recall(data):
    x, ids, q = data
    index = fx.build_index(x, ids, "ivf", nlist=64, nprobe=1)
    _, want = exact(x, ids, q, 1)
    low = (fx.search(index, q, 1)[1][:, 0] == want[:, 0]).mean()
    fx.set_search_params(index, nprobe=64)  # all lists: exact
    high = (fx.search(index, q, 1)[1][:, 0] == want[:, 0]).mean()
    assert high == 1.0 and low < high


def test_k_larger_than_index_pads_and_empty_index():
    x = clustered(3)
    scores, ids = fx.search(fx.build_index(x, np.array([5, 6, 7]), "flat"), x[:1], 5)
    assert ids[0, 0] == 5 and list(ids[0, 3:]) == [-1, -1] and np.isneginf(scores[0, 3:]).all()
    empty = fx.build_index(np.zeros((0, 64), np.float32), np.zeros(0, np.int64), "ivf")
    assert not empty.is_trained
    scores, ids = fx.search(empty, x[:2], 3)
    assert (ids == -1).all() and ids.shape == (2, 3)


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_removal_keeps_other_ids_consistent(data, kind):
    x, ids, _ = data
    index = fx.build_index(x, ids, kind, **({"nprobe": 10_000} if kind == "ivf" else {}))
    gone = ids[:50]
    assert fx.remove_vectors(index, gone) == 50
    assert index.ntotal == len(x) - 50
    _, got = fx.search(index, x[:60], 1)
    assert not np.isin(got, gone).any()
    np.testing.assert_array_equal(got[50:, 0], ids[50:60])  # remaining vectors still map to their own ids
    np.testing.assert_array_equal(fx.index_ids(index), np.sort(ids[50:]))


def test_hnsw_cannot_remove(data):
    x, ids, _ = data
    index = fx.build_index(x[:100], ids[:100], "hnsw")
    assert not fx.supports_removal(index)
    with pytest.raises(ValueError, match="rebuild"):
        fx.remove_vectors(index, ids[:1])


def test_add_vectors(data):
    x, ids, _ = data
    index = fx.build_index(x[:100], ids[:100], "flat")
    fx.add_vectors(index, x[100:110], ids[100:110])
    assert fx.search(index, x[105:106], 1)[1][0, 0] == ids[105]


@pytest.mark.parametrize("kind", fx.CONCRETE_KINDS)
def test_write_read_round_trip(tmp_path, data, kind):
    x, ids, q = data
    index = fx.build_index(x, ids, kind)
    path = fx.write_index(index, tmp_path / "index.faiss")
    assert [p.name for p in tmp_path.iterdir()] == ["index.faiss"]  # no temp file left behind
    loaded = fx.read_index(path)
    assert fx.index_kind(loaded) == kind and loaded.ntotal == len(x)
    np.testing.assert_array_equal(fx.search(loaded, q, 3)[1], fx.search(index, q, 3)[1])


def test_failed_write_keeps_the_old_file(tmp_path, data, monkeypatch):
    x, ids, _ = data
    path = fx.write_index(fx.build_index(x[:10], ids[:10]), tmp_path / "index.faiss")
    before = path.read_bytes()

    def broken(index, name):
        with open(name, "wb") as f:
            f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(fx.faiss, "write_index", broken)
    with pytest.raises(RuntimeError):
        fx.write_index(fx.build_index(x, ids), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["index.faiss"]


def test_read_garbage_is_a_gallery_error(tmp_path):
    bad = tmp_path / "index.faiss"
    bad.write_bytes(b"not a faiss index at all")
    with pytest.raises(GalleryError, match="cannot read faiss index"):
        fx.read_index(bad)
    with pytest.raises(GalleryError, match="no index file"):
        fx.read_index(tmp_path / "missing.faiss")


def test_bad_arguments():
    x = clustered(10)
    with pytest.raises(ValueError, match="unknown index kind"):
        fx.build_index(x, np.arange(10), "lsh")
    with pytest.raises(ValueError, match="unknown hnsw index parameter"):
        fx.build_index(x, np.arange(10), "hnsw", nprobe=3)
    with pytest.raises(ValueError, match="unique"):
        fx.build_index(x, np.zeros(10), "flat")
    with pytest.raises(ValueError, match="ids"):
        fx.build_index(x, np.arange(9), "flat")
    with pytest.raises(ValueError, match="NaN"):
        fx.build_index(np.full((2, 4), np.nan), np.arange(2))
    with pytest.raises(ValueError, match="64-d"):
        fx.search(fx.build_index(x, np.arange(10)), np.ones((1, 8)), 1)


def test_auto_keeps_small_galleries_exact(data):
    x, ids, q = data
    assert fx.auto_index(len(x), 64) == ("flat", {})
    index = fx.build_index(x, ids, "auto")
    assert fx.describe_index(index)["kind"] == "flat"
    np.testing.assert_array_equal(fx.search(index, q, 3)[1], exact(x, ids, q, 3)[1])


def people(n: int, per_person: int = 5, dim: int = 64, noise: float = 0.6, n_queries: int = 300, seed: int = 1):
    """A gallery of ``n`` photos, ``per_person`` each, with everyone's identity, and new photos of them as queries."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n // per_person, dim)).astype(np.float32)
    labels, query_labels = np.arange(n) % len(centers), rng.integers(0, len(centers), n_queries)

    def photos(owner: np.ndarray) -> np.ndarray:
        x = centers[owner] + noise * rng.standard_normal((len(owner), dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    return photos(labels), labels, photos(query_labels), query_labels


def test_auto_past_the_threshold_is_a_trained_ivf_tuned_for_recall():
    x, labels, q, q_labels = people(5000)
    ids = np.arange(len(x), dtype=np.int64)
    kind, params = fx.auto_index(len(x), 64, flat_max=1000)
    assert kind == "ivf" and params["nprobe"] is None  # left to tuning
    assert params["nlist"] == fx.default_nlist(len(x)) and params["train_size"] <= len(x)
    index = fx.build_index(x, ids, "auto", flat_max=1000, recall=0.95)
    info = fx.describe_index(index)
    assert info["kind"] == "ivf" and info["nlist"] == params["nlist"] and info["vectors"] == len(x)
    assert 1 < info["nprobe"] < info["nlist"]  # tuning chose a partial scan, neither the cheapest nor exhaustive
    # identity recall@1 of new photos (not the tuning queries), against what exact search gets
    ceiling = (labels[exact(x, ids, q, 1)[1][:, 0]] == q_labels).mean()
    assert (labels[fx.search(index, q, 1)[1][:, 0]] == q_labels).mean() >= min(0.95, ceiling - 0.02)
    fx.set_search_params(index, nprobe=1)  # the recall came from tuning: one list is clearly worse
    assert (labels[fx.search(index, q, 1)[1][:, 0]] == q_labels).mean() < ceiling - 0.05


def test_a_higher_recall_target_probes_more_lists(data):
    x, ids, _ = data
    low = fx.describe_index(fx.build_index(x, ids, "auto", flat_max=1000, recall=0.5))["nprobe"]
    high = fx.describe_index(fx.build_index(x, ids, "auto", flat_max=1000, recall=0.99))["nprobe"]
    assert low < high


def test_tens_of_thousands_of_lists_get_an_hnsw_quantizer_and_wide_vectors_get_pq_codes():
    kind, params = fx.auto_index(100_000_000, 512)
    assert kind == "ivf" and params["quantizer"] == "hnsw" and params["nlist"] >= fx.AUTO_HNSW_QUANTIZER_LISTS
    million = fx.auto_index(1_000_000, 128)[1]
    assert million["quantizer"] == "flat" and million["encoding"] == "pq"
    assert million["train_size"] < 1_000_000  # k-means on a sample
    assert fx.auto_index(1_000_000, 62)[1]["encoding"] == "flat"  # too narrow (and odd) for 4-bit codes
    assert fx.auto_index(60_000, 128)[1]["quantizer"] == "flat"


def test_the_auto_choice_survives_write_and_read(tmp_path, data):
    x, ids, q = data
    index = fx.build_index(x, ids, "auto", flat_max=1000, recall=0.99)
    loaded = fx.read_index(fx.write_index(index, tmp_path / "index.faiss"))
    assert fx.describe_index(loaded) == fx.describe_index(index)  # tuned nprobe included
    np.testing.assert_array_equal(fx.search(loaded, q, 3)[1], fx.search(index, q, 3)[1])


def test_an_ivf_with_hnsw_quantizer_removes_and_persists(tmp_path, data):
    x, ids, _ = data
    index = fx.build_index(x, ids, "ivf", nlist=64, nprobe=64, quantizer="hnsw")
    assert fx.remove_vectors(index, ids[:10]) == 10
    loaded = fx.read_index(fx.write_index(index, tmp_path / "index.faiss"))
    assert fx.describe_index(loaded)["quantizer"] == "hnsw" and fx.describe_index(loaded)["quantizer_ef_search"] >= 64
    assert not np.isin(fx.search(loaded, x[:20], 1)[1], ids[:10]).any()


def test_unknown_auto_or_ivf_parameters_are_refused():
    x = clustered(100)
    with pytest.raises(ValueError, match="unknown auto index parameter 'nprobe'"):
        fx.build_index(x, np.arange(100), "auto", nprobe=3)
    with pytest.raises(ValueError, match="quantizer"):
        fx.build_index(x, np.arange(100), "ivf", quantizer="pq")
    with pytest.raises(ValueError, match="encoding"):
        fx.build_index(x, np.arange(100), "ivf", encoding="opq")
    with pytest.raises(ValueError, match="256 vectors"):
        fx.build_index(x, np.arange(100), "ivf", encoding="pq")


def test_pq_with_rescoring_keeps_ids_persists_and_rebuilds_instead_of_removing(tmp_path, data):
    x, ids, q = data
    index = fx.build_index(x, ids, "ivf", nlist=32, nprobe=32, encoding="pq", k_factor=8)
    info = fx.describe_index(index)
    assert info["encoding"] == "pq" and info["pq_bytes"] == x.shape[1] // 4 and info["k_factor"] == 8
    assert info["refine"] == "flat"
    scores, got = fx.search(index, q, 3)
    want_scores, want = exact(x, ids, q, 3)
    assert (got[:, 0] == want[:, 0]).mean() >= 0.95  # every list probed: re-scoring recovers the exact top hit
    np.testing.assert_allclose(scores[:, 0], want_scores[:, 0], atol=1e-5)  # cosines from float copies
    lean = fx.build_index(x, ids, "ivf", nlist=32, nprobe=32, encoding="pq", refine="sq8")
    assert (
        fx.describe_index(lean)["refine"] == "sq8"
        and fx.faiss.serialize_index(lean).size < fx.faiss.serialize_index(index).size
    )
    loaded = fx.read_index(fx.write_index(index, tmp_path / "index.faiss"))
    assert fx.describe_index(loaded) == info
    np.testing.assert_array_equal(fx.search(loaded, q, 3)[1], got)
    assert not fx.supports_removal(index)
    with pytest.raises(ValueError, match="rebuild"):
        fx.remove_vectors(index, ids[:1])
