@echo off
rem Build the conda-constructor installer for Windows (.exe). Run from an Anaconda/Miniforge
rem prompt in an environment with constructor, menuinst, pillow and pip. Output: dist\installers.
setlocal
set "HERE=%~dp0"
set "REPO=%HERE%..\.."
where constructor >nul 2>nul || (echo build.bat: constructor not found & exit /b 2)
if exist "%HERE%dist" rmdir /s /q "%HERE%dist"
python -m pip wheel --no-deps --wheel-dir "%HERE%dist" "%REPO%" || exit /b 1
for %%W in ("%HERE%dist\dls_microscopy-*.whl") do set "DLS_WHEEL=%%~fW"
for /f "tokens=2 delims=-" %%V in ("%DLS_WHEEL:*dls_microscopy=dls_microscopy%") do set "DLS_VERSION=%%V"
python "%HERE%make_icons.py" "%HERE%icons" || exit /b 1
if not exist "%REPO%\dist\installers" mkdir "%REPO%\dist\installers"
constructor --output-dir "%REPO%\dist\installers" "%HERE%." || exit /b 1
dir "%REPO%\dist\installers"
