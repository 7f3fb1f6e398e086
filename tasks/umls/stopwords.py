"""English function words for QuickUMLS, written as an NLTK `stopwords` corpus.

QuickUMLS asks NLTK for its stopword list and calls `nltk.download` when it is
missing, which fails offline. The index carries its own list instead. Function
words only: content words ("side", "back", "show") must stay matchable.
"""
from __future__ import annotations

from pathlib import Path

ENGLISH = sorted(set("""
a about above after again against all am an and any are as at be because been before
being below between both but by can could did do does doing down during each few for
from further had has have having he her here hers herself him himself his how i if in
into is it its itself just me more most my myself nor of off on once only or other our
ours ourselves out over own same she should so some such than that the their theirs
them themselves then there these they this those through to too under until up very
was we were what when where which while who whom why will with would you your yours
yourself yourselves s t d ll m o re ve y isn aren wasn weren hasn haven hadn doesn
don didn won wouldn shan shouldn mustn mightn needn couldn ain ma also via per within
upon onto toward towards among amongst no not none
""".split()))


def write_nltk_stopwords(nltk_dir: str | Path, language: str = "english") -> Path:
    """Write `<nltk_dir>/corpora/stopwords/<language>` (one word a line); returns nltk_dir."""
    nltk_dir = Path(nltk_dir)
    folder = nltk_dir / "corpora" / "stopwords"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / language).write_text("\n".join(ENGLISH) + "\n", encoding="utf-8")
    return nltk_dir
