"""Domain logic of every stage: plain functions first, Prefect tasks wrap them in flows/."""
