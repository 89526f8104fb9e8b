"""The local runtime: plays the MultiLangDaemon's role on one host, without a JVM."""
