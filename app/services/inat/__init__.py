"""iNaturalist open data: stream the metadata dump into staging tables, then pick photos.

- `reader`: validated rows from the tab-separated files (plain or gzipped);
- `ingest`: load them into the `inat_*` staging tables (PostgreSQL COPY, SQLite batches),
  keeping only the taxa subtree under the chosen root taxa;
- `select`: species and pending `images` rows from the staged data;
- `params`: the validated parameters that jobs and the command line share.
"""
