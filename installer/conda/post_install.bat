@echo off
rem constructor post-install (Windows .exe): install the bundled wheel of dls-microscopy into the
rem new environment, then create the Start menu and desktop shortcuts from Menu\dls-microscopy.json.
setlocal
for %%W in ("%PREFIX%\pkgs_dls\dls_microscopy-*.whl") do set "WHEEL=%%~fW"
"%PREFIX%\python.exe" -m pip install --no-warn-script-location "%WHEEL%[gui]" || exit /b 1
"%PREFIX%\python.exe" -c "import sys; from menuinst.api import install; install(sys.argv[1] + r'\Menu\dls-microscopy.json', target_prefix=sys.argv[1], base_prefix=sys.argv[1])" "%PREFIX%" || exit /b 1
"%PREFIX%\Scripts\dls-microscopy.exe" --version || exit /b 1
