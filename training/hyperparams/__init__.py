"""Hyper-parameters per algorithm (<algo>.yml keyed by env id, rl-zoo3 layout); a package so installs ship the YAML."""
