"""split_reports: radiology reports into sections, sentences, clauses, anatomy descriptions and labels."""
