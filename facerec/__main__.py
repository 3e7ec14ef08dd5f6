from facerec.cli import entry

entry()
