"""Hot billing: CDR files from switches that cannot charge in real time (issue 6).

Collected from a directory or an FTP server, decoded (ASN.1 BER per 3GPP TS 32.298, or the
documented ASCII format), rated and debited as forced direct debits keyed by the record's
identity, then exported to the warehouse (Parquet) and the retention archive.
"""
