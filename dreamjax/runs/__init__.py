"""One importable function per experiment script: the scripts only parse flags."""
