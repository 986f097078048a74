"""Collectors: one module per protocol (OPC UA, MQTT JSON, Sparkplug B, HTTP) behind one interface."""
