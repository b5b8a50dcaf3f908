"""The lab: real SIP processes for the demo mode and the tests.

- `ports`: free loopback ports (UDP and TCP);
- `proc`: process plumbing (log files, stop by PID);
- `kamailio`: a registrar/proxy with digest auth, trunk prefixes and pickup;
- `baresip`: far-end phones that send a tone, record what they hear and obey
  ctrl_tcp commands;
- `sipp`: scripted SIPp UAS/UAC with a readable message trace;
- `tones`: tone WAVs and FFT checks of recordings;
- `slapd`: an OpenLDAP directory (people with Latin and Cyrillic names, a read-only bind account, ldaps optional);
- `unit`: the kiosk program itself as a lab process.
"""
