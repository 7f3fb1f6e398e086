"""`ingest`: PMC OA packages in, validated article shards and metadata out."""
