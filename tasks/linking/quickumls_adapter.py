"""QuickUMLS behind one door: every use of its internals goes through this module.

The linker calls QuickUMLS's private matcher methods (n-grams, candidate lookup, its
stopwords) and the index build calls its installer's extractor and database writers;
none of these are a public API, so they are named here once, with what each must look
like (REQUIRED), and `problems()` checks the installed QuickUMLS against it, by
signature and by building and querying a one-term index
(tests/test_quickumls_adapter.py). The index build writes the simstring database with its own
writer (tasks/umls/simstring_writer.py, in bounded memory); the check also compares its bytes
with QuickUMLS's writer's. constraints.txt pins the version this was written
against (QUICKUMLS_VERSION).
"""
from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Iterable, Iterator

QUICKUMLS_VERSION = "1.4.2"

# (module, qualified name, the parameters it must accept in this order)
REQUIRED: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("quickumls.core", "QuickUMLS.__init__", ("self", "quickumls_fp", "overlapping_criteria", "threshold",
                                              "window", "similarity_name", "min_match_length",
                                              "accepted_semtypes")),
    ("quickumls.core", "QuickUMLS._make_ngrams", ("self", "sent")),
    ("quickumls.core", "QuickUMLS._get_all_matches", ("self", "ngrams")),
    ("quickumls.core", "QuickUMLS._match", ("self", "doc")),
    ("quickumls.core", "QuickUMLS.match", ("self", "text")),
    ("quickumls.install", "extract_from_mrconso", ("mrconso_path", "mrsty_path", "opts")),
    ("quickumls.toolbox", "SimstringDBWriter.__init__", ("self", "path")),
    ("quickumls.toolbox", "SimstringDBWriter.insert", ("self", "term")),
    ("quickumls.toolbox", "CuiSemTypesDB.__init__", ("self", "path", "database_backend")),
    ("quickumls.toolbox", "db_key_encode", ("term",)),
    ("quickumls.toolbox", "prepare_string_for_db_input", ("s",)),
    ("quickumls.toolbox", "safe_unicode", ("s",)),
    ("quickumls.toolbox", "mkdir", ("path",)),
)
# what the linker reads from each candidate _get_all_matches returns
CANDIDATE_KEYS = frozenset(("start", "end", "ngram", "term", "cui", "similarity", "semtypes", "preferred"))


# -- the matcher (tasks/linking/linker.py) ---------------------------------------------------
def open_matcher(quickumls_fp: str | Path, nltk_dir: str | Path | None = None, **kwargs):
    """QuickUMLS as a spaCy component: no spaCy model of its own (none can be downloaded).
    nltk_dir: an NLTK data folder with the stopwords corpus QuickUMLS reads (else it
    downloads one)."""
    import nltk
    from quickumls import QuickUMLS

    if nltk_dir is not None:
        private = _private_copy(Path(nltk_dir))
        if private not in nltk.data.path:
            nltk.data.path.insert(0, private)
    return QuickUMLS(str(quickumls_fp), spacy_component=True, **kwargs)


_COPIES: dict[Path, str] = {}


def _private_copy(nltk_dir: Path) -> str:
    """A copy of the NLTK folder for this process: NLTK refuses to open a file with more than
    one hard link (its path security, CWE-59), and with DVC's hardlink cache every output file
    of umls_index is one."""
    if nltk_dir not in _COPIES:
        import atexit
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="medconcept-nltk-"))
        atexit.register(shutil.rmtree, folder, True)
        shutil.copytree(nltk_dir, folder / "nltk_data")
        _COPIES[nltk_dir] = str(folder / "nltk_data")
    return _COPIES[nltk_dir]


def stopwords(matcher) -> set[str]:
    """The stopwords QuickUMLS loaded (NLTK's list for the index language plus its own)."""
    return set(matcher._stopwords)


def negations(matcher) -> set[str]:
    return set(matcher.negations)


def valid_punct(matcher) -> set[str]:
    """The punctuation QuickUMLS allows inside a span (dashes), beside brackets."""
    return set(matcher.valid_punct)


def make_ngrams(matcher, doc) -> Iterator[tuple[int, int, str]]:
    """QuickUMLS's candidate spans of a spaCy doc: (start char, end char, text)."""
    return matcher._make_ngrams(doc)


def get_all_matches(matcher, ngrams: Iterable[tuple[int, int, str]]) -> list[list[dict]]:
    """Candidates per n-gram (dicts with CANDIDATE_KEYS), best first."""
    return matcher._get_all_matches(ngrams)


def with_pipeline(matcher, nlp):
    """A matcher whose public `match(text)` parses with `nlp` (standalone, QuickUMLS would load
    a spaCy model of its own, which cannot be downloaded here)."""
    matcher.nlp = nlp
    return matcher


def match_doc(matcher, doc) -> list[list[dict]]:
    """What QuickUMLS's own matching does with a parsed doc (`match` without its parse)."""
    return matcher._match(doc)


# -- the installer (tasks/umls/index.py, tasks/umls/databases.py) ----------------------------
def extract_from_mrconso(mrconso: str | Path, mrsty: str | Path, *, language: str, lowercase: bool,
                         normalize_unicode: bool) -> Iterator[tuple[str, str, list, int]]:
    """QuickUMLS's installer's own term extraction: (term, cui, semantic types, preferred)."""
    from quickumls import install

    opts = SimpleNamespace(language=language, lowercase=lowercase, normalize_unicode=normalize_unicode)
    return install.extract_from_mrconso(str(mrconso), str(mrsty), opts)


def db_string(text: str) -> str:
    """A term or CUI as QuickUMLS's database writers store it (NFKD)."""
    from quickumls.toolbox import prepare_string_for_db_input, safe_unicode

    return prepare_string_for_db_input(safe_unicode(text))


def db_key(text: str) -> bytes:
    from quickumls.toolbox import db_key_encode

    return db_key_encode(text)


SIMSTRING_FILE = "umls-terms.simstring"  # toolbox.SimstringDBWriter's file in its folder
SIMSTRING_NGRAM, SIMSTRING_BEGIN_END = 3, False  # its simstring.writer(file, 3, False, unicode=True)


def simstring_path(folder: str | Path) -> Path:
    """The master file of the simstring database in `folder` (created), as QuickUMLS names it."""
    from quickumls.toolbox import mkdir

    mkdir(str(folder))
    return Path(folder) / SIMSTRING_FILE


def simstring_writer(folder: str | Path):
    """QuickUMLS's simstring writer on `folder` (created); insert(term), then close_simstring()."""
    from quickumls.toolbox import SimstringDBWriter, mkdir

    mkdir(str(folder))
    return SimstringDBWriter(str(folder))


def close_simstring(writer) -> None:
    writer.db.close()


def cui_semtypes_db(folder: str | Path, database_backend: str):
    """QuickUMLS's term -> CUIs and CUI -> semantic types stores on `folder` (created)."""
    from quickumls.toolbox import CuiSemTypesDB, mkdir

    mkdir(str(folder))
    return CuiSemTypesDB(str(folder), database_backend=database_backend)


def put_term(db, term: str, value: bytes) -> None:
    db.cui_db_put(db_key(term), value)


def put_semtypes(db, cui: str, value: bytes) -> None:
    db.semtypes_db_put(db_key(cui), value)


def commit_stores(db, which: str = "both") -> None:
    """Commit the puts so far to the term store ("cui"), the semantic-type store ("semtypes") or
    both (unqlite holds a transaction's dirty pages in memory until it commits; leveldb writes
    as it goes)."""
    for name in (("cui_db", "semtypes_db") if which == "both" else (f"{which}_db",)):
        store = getattr(db, name)
        if hasattr(store, "commit"):
            store.commit()


def close_stores(db, which: str = "both") -> None:
    """Close the term store ("cui"), the semantic-type store ("semtypes") or both (unqlite;
    leveldb flushes when released)."""
    for name in (("cui_db", "semtypes_db") if which == "both" else (f"{which}_db",)):
        store = getattr(db, name)
        if hasattr(store, "close"):
            store.close()


def installer_command(meta_dir: str | Path, destination: str | Path, *, language: str = "ENG",
                      lowercase: bool = True, normalize_unicode: bool = True,
                      database_backend: str = "unqlite") -> list[str]:
    """argv that runs QuickUMLS's own installer script (`python -m quickumls.install`) on a
    META folder, into an existing empty `destination`. Its first step, a spaCy model
    check that downloads one when missing, is skipped: no model can be downloaded here,
    and the install does not use it."""
    import sys

    flags = [*(["-L"] if lowercase else []), *(["-U"] if normalize_unicode else []),
             "-d", database_backend, "-E", language]
    script = ("import sys; from quickumls import install; install.install_spacy = lambda lang: None; "
              "sys.argv = sys.argv[1:]; install.main()")
    return [sys.executable, "-c", script, "quickumls.install", str(meta_dir), str(destination), *flags]


# -- the check -------------------------------------------------------------------------------
def _signature_problems() -> list[str]:
    found = []
    for module_name, qualname, params in REQUIRED:
        try:
            obj = importlib.import_module(module_name)
            for part in qualname.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError):
            found.append(f"{module_name}.{qualname} is missing")
            continue
        have = tuple(inspect.signature(obj).parameters)
        if have[:len(params)] != params:
            found.append(f"{module_name}.{qualname}{have} no longer starts with {params}")
    return found


def _behaviour_problems(folder: Path) -> list[str]:
    """Build a one-term index through this module, open it and look one n-gram up."""
    import pickle

    meta = folder / "META"
    meta.mkdir(parents=True)
    (meta / "MRCONSO.RRF").write_text("C0000001|ENG|P|L1|PF|S1|Y|A1||||SAB|PT|1|Lung|0|N||\n", encoding="utf-8")
    (meta / "MRSTY.RRF").write_text("C0000001|T023||Body Part|||\n", encoding="utf-8")
    with contextlib.redirect_stdout(io.StringIO()):  # its progress lines
        rows = list(extract_from_mrconso(meta / "MRCONSO.RRF", meta / "MRSTY.RRF", language="ENG",
                                         lowercase=True, normalize_unicode=False))
    if rows != [("lung", "C0000001", ["T023"], 1)]:
        return [f"install.extract_from_mrconso yields {rows!r}, not (term, cui, semtypes, preferred)"]
    qdir = folder / "quickumls"
    writer = simstring_writer(qdir / "umls-simstring.db")
    writer.insert(db_string("lung"))
    close_simstring(writer)
    found = _simstring_bytes_problems(folder / "simstring")
    db = cui_semtypes_db(qdir / "cui-semtypes.db", "unqlite")
    put_term(db, db_string("lung"), pickle.dumps({("C0000001", 1)}))
    put_semtypes(db, db_string("C0000001"), pickle.dumps({"T023"}))
    close_stores(db)
    (qdir / "lowercase.flag").write_text("")
    (qdir / "language.flag").write_text("ENG")
    (qdir / "database_backend.flag").write_text("unqlite")
    from tasks.umls.stopwords import write_nltk_stopwords

    nltk_dir = write_nltk_stopwords(qdir / "nltk_data")
    matcher = open_matcher(qdir, nltk_dir, threshold=0.7, window=5, similarity_name="jaccard",
                           min_match_length=3, accepted_semtypes=None)
    if not isinstance(matcher._stopwords, (set, frozenset)) or "the" not in stopwords(matcher):
        found.append("QuickUMLS._stopwords is no longer a set of stopwords")
    if "no" not in negations(matcher):
        found.append("QuickUMLS.negations is no longer the negation words")
    groups = get_all_matches(matcher, [(0, 4, "Lung")])
    if not groups or not groups[0] or set(groups[0][0]) != CANDIDATE_KEYS or groups[0][0]["cui"] != "C0000001":
        found.append(f"QuickUMLS._get_all_matches returned {groups!r}")
    import spacy

    doc = spacy.blank("en")("Lung")
    if set(make_ngrams(matcher, doc)) != {(0, 4, "Lung")}:
        found.append("QuickUMLS._make_ngrams no longer yields (start, end, text)")
    matched = with_pipeline(matcher, spacy.blank("en")).match("Lung")
    if [group[0]["cui"] for group in matched] != ["C0000001"]:
        found.append(f"QuickUMLS.match returned {matched!r}")
    return found


def _simstring_bytes_problems(folder: Path) -> list[str]:
    """tasks.umls.simstring_writer (the index build's) writes what QuickUMLS's writer writes."""
    from tasks.umls.simstring_writer import SimstringWriter

    terms = ["", "lu", "lung", "lung cancer", "aaaaaaaaaaaaaa", "café", "\U0001d518x"]
    writer = simstring_writer(folder / "quickumls")
    ours = SimstringWriter(simstring_path(folder / "ours"), n=SIMSTRING_NGRAM, be=SIMSTRING_BEGIN_END)
    for term in map(db_string, terms):
        writer.insert(term)
        ours.insert(term)
    close_simstring(writer)
    ours.close()
    theirs = {p.name: p.read_bytes() for p in sorted((folder / "quickumls").iterdir())}
    if theirs != {p.name: p.read_bytes() for p in sorted((folder / "ours").iterdir())}:
        return ["toolbox.SimstringDBWriter writes other bytes than tasks.umls.simstring_writer "
                f"(files {sorted(theirs)}): its n-gram settings or file format changed"]
    return []


def problems() -> list[str]:
    """What the installed QuickUMLS lacks of what this module uses (empty: all there)."""
    import tempfile
    from importlib.metadata import version

    global _CHECK_DIR
    found = _signature_problems()
    installed = version("quickumls")
    if installed != QUICKUMLS_VERSION:
        found.append(f"quickumls {installed} is installed; this adapter was checked against {QUICKUMLS_VERSION}")
    if not found:
        # One folder per process: NLTK keeps reading stopwords from where it first found them.
        if _CHECK_DIR is None:
            _CHECK_DIR = tempfile.TemporaryDirectory(prefix="quickumls_check_")
        folder = Path(_CHECK_DIR.name) / "index"
        shutil.rmtree(folder, ignore_errors=True)
        found += _behaviour_problems(folder)
    return found


_CHECK_DIR = None
