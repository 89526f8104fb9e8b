"""The KCL runtime: the Java MultiLangDaemon, for several hosts sharing one task name."""
