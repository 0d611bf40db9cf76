package array

import (
	"fmt"
)

// Settings are small named values that the array's front ends keep in the
// metadata store under "setting/<name>" (for example the management shell's
// SSH host key). The array does not interpret them: the package that writes
// a setting owns its format and documents it beside its encoder. Settings
// work while the array is locked.

const (
	settingNameMax  = 64
	settingValueMax = 64 << 10
)

func settingKey(name string) string { return "setting/" + name }

func checkSettingName(name string) error {
	if len(name) == 0 || len(name) > settingNameMax {
		return fmt.Errorf("%w: setting name %q must be 1 to %d characters", ErrInvalid, name, settingNameMax)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return fmt.Errorf("%w: setting name %q may contain only a-z, 0-9, '.', '-' and '_'", ErrInvalid, name)
		}
	}
	return nil
}

// Setting returns the value of a setting and whether it is set.
func (a *Array) Setting(name string) ([]byte, bool, error) {
	if err := checkSettingName(name); err != nil {
		return nil, false, err
	}
	v, ok, err := a.store.ObjectGet(settingKey(name))
	if err != nil {
		return nil, false, fmt.Errorf("setting %s: %w", name, err)
	}
	return v, ok, nil
}

// SetSetting stores a setting durably (synced); a nil value deletes it.
func (a *Array) SetSetting(name string, value []byte) error {
	if err := checkSettingName(name); err != nil {
		return err
	}
	if len(value) > settingValueMax {
		return fmt.Errorf("%w: setting %s: %d bytes is over the limit of %d", ErrInvalid, name, len(value), settingValueMax)
	}
	var err error
	if value == nil {
		err = a.store.ObjectUpdate(nil, []string{settingKey(name)})
	} else {
		err = a.store.ObjectUpdate(map[string][]byte{settingKey(name): value}, nil)
	}
	if err != nil {
		return fmt.Errorf("setting %s: %w", name, err)
	}
	return nil
}
