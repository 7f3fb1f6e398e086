"""`figures`: image-caption pairs from article shards, from JATS `<fig>` or from the PDF."""
