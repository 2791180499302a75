"""Scripts: benchmark, training, reproduction, stress and speed (`edgellm-gym <command>`)."""
